"""`make dag-test`: arguments are checked before anything starts."""

from devtools.dag_test import main


def test_usage_and_bad_conf_are_refused_before_any_service_starts(capsys):
    assert main([]) == 2 and "usage: python -m devtools.dag_test <dag id>" in capsys.readouterr().err
    assert main(["compile_pipeline", "{not json"]) == 2 and "CONF is not JSON" in capsys.readouterr().err
