"""`make dag-test`: arguments are checked before anything starts."""

from devtools.dag_test import main


def test_usage_and_bad_conf_are_refused_before_any_service_starts(capsys):
    assert main([]) == 2 and "usage: python -m devtools.dag_test <dag id>" in capsys.readouterr().err
    assert main(["compile_pipeline", "{not json"]) == 2 and "CONF is not JSON" in capsys.readouterr().err


def test_a_failing_stage_says_which_and_why_on_the_console(capsys, monkeypatch, tmp_path):
    """The console of make demo / make dag-test shows the pipeline's progress lines: a failing stage adds one, with
    its reason, whichever DAG it belongs to (a compile_pipeline @stage with a run store, or a promote_model @stage
    without one)."""
    import pytest

    from devtools.demo import airflow
    from tasks.core.params import PromoteParams
    from tasks.serving.records import PromoteRequest
    from tasks.stages.runner import PROGRESS_MARK, failure_said, stage

    with pytest.raises(ValueError, match="no such model"), failure_said("export"):
        raise ValueError("no such model 'x'")

    @stage("find")
    def find(params: PromoteParams) -> list[PromoteRequest]:
        raise RuntimeError("version 3 of m was not approved")

    with pytest.raises(RuntimeError):
        find({})
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"{PROGRESS_MARK} export          FAILED: ValueError: no such model 'x'",
        f"{PROGRESS_MARK} find            FAILED: RuntimeError: version 3 of m was not approved",
    ]
    # and the console echo keeps such a line out of Airflow's log (a task's stdout, as Airflow wraps it)
    script = tmp_path / "airflow"
    script.write_text(f"#!/bin/sh\necho '2026-12-03 [info] {printed[1]}  [task.stdout]'\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setattr("devtools.demo.sys.executable", str(tmp_path / "python"))
    monkeypatch.setattr("devtools.demo.airflow_env", lambda settings, home=None: {})
    assert airflow(["dags", "test", "promote_model"], None, tmp_path / "log", echo_progress=True) == 1
    assert capsys.readouterr().out == "  find            FAILED: RuntimeError: version 3 of m was not approved\n"
