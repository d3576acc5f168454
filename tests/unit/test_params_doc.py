"""docs/params.md is generated from the params records: a param added, renamed or redescribed without regenerating
it fails here."""

from devtools.params_doc import DOC, render
from tasks.core.params import PipelineParams


def test_the_params_reference_is_what_the_records_say():
    assert DOC.read_text() == render(), "docs/params.md is stale: run python -m devtools.params_doc"
    # every compile_pipeline param is in it
    for name in PipelineParams.model_fields:
        assert f"| `{name}` |" in DOC.read_text(), name
    assert "| `min_neighbour_recall` | Gate | `0.9` | >= 0; <= 1 |" in DOC.read_text()
