"""The records promote_model's stages hand on (JSON through XCom), each the one before with what its stage added:

``find`` → :class:`PromoteRequest` → ``promote`` → :class:`Promoted` → ``smoke_test`` → :class:`SmokeTested`
→ ``serve`` → :class:`Served`.
"""

from __future__ import annotations

from typing import Self

from pydantic import model_validator

from tasks.core.figures import OutputCheck, said
from tasks.core.outcomes import Promotion
from tasks.core.schema import Record


class PromoteRequest(Record):
    """A registry version of ``model`` to promote (``registry_version``), or a committed serving version to point
    serving back to (``rollback_to``); ``host_class``: the host class its target runs on, where its smoke test
    runs (its Neuron device, its GPU)."""

    model: str
    registry_version: str | None = None
    rollback_to: int | None = None
    host_class: str = "cpu"  # a request without one predates host classes

    @model_validator(mode="after")
    def _promotes_or_rolls_back(self) -> Self:
        if (self.registry_version is None) == (self.rollback_to is None):
            raise ValueError(f"a request for {self.model} names a registry_version to promote or a rollback_to")
        return self

    @property
    def rollback(self) -> bool:
        return self.rollback_to is not None

    @property
    def name(self) -> str:
        """The mapped task instance's name: ``<model>-v<registry version>`` or ``<model>-rollback-<N>``."""
        if self.rollback:
            return f"{self.model}-rollback-{self.rollback_to}"
        return f"{self.model}-v{self.registry_version}"

    @classmethod
    def of(cls, data: dict) -> PromoteRequest:
        """The request in the JSON of any record of the chain (the fields a request has, the rest left out)."""
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class Promoted(PromoteRequest):
    """The request with the serving version it is committed as on S3 (a rollback's: the one it names)."""

    version: int
    run_id: str = ""  # the MLflow run the registry version was logged by ("" for a rollback: its manifest says)
    promotion: Promotion | None = None  # None for a rollback: nothing was copied
    approval: str = ""  # whether approval is a control here (tasks.registry.review.approval_control)


class SmokeResult(Record):
    """The committed version read back from S3 and run on the validation samples (tasks.serving.smoke)."""

    model: str
    version: int
    samples: int
    files_verified: int
    outputs: list[OutputCheck]  # each output against the one recorded at validation

    @property
    def summary(self) -> str:
        several = len(self.outputs) > 1
        return "; ".join(f"{c.name}: {said(c)}" if several else said(c) for c in self.outputs)


class SmokeTested(Promoted):
    # None where serve is handed a promoted version directly (the DAG smoke-tests every one, rollbacks too)
    smoke: SmokeResult | None = None


class ServingPointer(Record):
    """Where the runtime's pointer stands after a move (tasks.serving.pointer.point_serving)."""

    model: str
    version: int  # the committed version it was asked to point at
    served_version: int  # what it names now: a newer version where a later promotion finished first
    moved: bool  # it names ``version`` now
    runtime: str
    pointer_uri: str
    k8s_uri: str
    pointer: str  # the pointer file's text (models.config, config.pbtxt or config.json)


class Served(SmokeTested):
    serving: ServingPointer
