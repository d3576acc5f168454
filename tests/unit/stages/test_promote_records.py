"""promote_model's stages run as compile_pipeline's do: records' JSON in, typed records to the stage, JSON out, a
failure said as its FAILED line; without a run store, since promote_model has none."""

import pytest
from pydantic import ValidationError
from requests.exceptions import ConnectionError as RequestsConnectionError

from tasks.core.faults import ServiceUnreachable
from tasks.core.outcomes import Promotion
from tasks.core.params import PromoteParams
from tasks.serving.records import Promoted, PromoteRequest, Served, ServingPointer, SmokeTested
from tasks.stages.promote_model import for_host_class, request_name
from tasks.stages.runner import PROGRESS_MARK, stage

PROMOTION = Promotion(uri="s3://b/p/m/3/", endpoint_url=None, manifest_uri="s3://b/p/m/3/manifest.json", manifest={},
                      version=3)  # fmt: skip


@stage("promote")
def fake_promote(request: PromoteRequest) -> Promoted:
    if request.rollback:
        return Promoted(**dict(request), version=request.rollback_to)
    return Promoted(**dict(request), version=3, run_id="r1", promotion=PROMOTION, approval="enforced")


def test_a_stage_takes_and_returns_the_records_json_and_names_and_routes_from_any_of_them():
    promoted = fake_promote({"model": "m", "registry_version": "7", "host_class": "inf2"})
    assert promoted == {"model": "m", "registry_version": "7", "rollback_to": None, "host_class": "inf2", "version": 3,
                        "run_id": "r1", "promotion": PROMOTION.to_json(), "approval": "enforced"}  # fmt: skip
    rollback = fake_promote({"model": "m", "rollback_to": 2})
    assert rollback["version"] == 2 and rollback["promotion"] is None and rollback["host_class"] == "cpu"
    assert request_name(promoted) == "m-v7" and request_name(rollback) == "m-rollback-2"
    assert for_host_class([promoted, rollback], "inf2") == [promoted]
    assert for_host_class([promoted, rollback], "cpu") == [rollback]
    # each stage's record is the one before with what it added; serve may be handed a promoted version directly
    smoked = SmokeTested.model_validate(promoted)
    assert smoked.smoke is None and smoked.promotion == PROMOTION
    pointer = ServingPointer(model="m", version=3, served_version=3, moved=True, runtime="triton",
                             pointer_uri="s3://b/p/m/config.pbtxt", k8s_uri="s3://b/p/m/k8s/3.yaml", pointer="")  # fmt: skip
    served = Served(**dict(smoked), serving=pointer).to_json()
    assert served["serving"]["moved"] and request_name(served) == "m-v7"


def test_a_request_promotes_a_registry_version_or_rolls_back_never_both_nor_neither():
    for bad in ({"model": "m"}, {"model": "m", "registry_version": "1", "rollback_to": 1}):
        with pytest.raises(ValidationError, match="names a registry_version to promote or a rollback_to"):
            PromoteRequest.model_validate(bad)


def test_a_failure_or_a_bad_record_is_said_as_the_stages_failed_line(capsys):
    @stage("find")
    def find(params: PromoteParams) -> list[PromoteRequest]:
        raise RuntimeError("version 3 of m was not approved")

    with pytest.raises(RuntimeError):
        find({"model_name": "m"})
    with pytest.raises(ValidationError):
        fake_promote({"model": "m", "registry_version": "7", "surprise": 1})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{PROGRESS_MARK} find            FAILED: RuntimeError: version 3 of m was not approved"
    assert (
        printed[1] == f"{PROGRESS_MARK} promote         FAILED: ValidationError: 1 validation error for PromoteRequest"
    )
    assert printed[2] == "surprise"  # the field pydantic refused, on the lines after


def test_an_unreachable_service_is_named_in_the_failure(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    @stage("serve")
    def serve(smoked: SmokeTested) -> Served:
        raise RequestsConnectionError("Connection refused")

    with pytest.raises(ServiceUnreachable, match="MLflow tracking server http://127.0.0.1:9 is unreachable"):
        serve({"model": "m", "rollback_to": 1, "version": 1})
    assert "serve           FAILED: ServiceUnreachable: MLflow tracking server" in capsys.readouterr().out
