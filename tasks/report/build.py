"""The run report's data (report.json): a RunReport built from the run's stage records in the run store: the
run's status and first failure, the model, dataset, CPU baselines, a row per config, and the registration."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel

from tasks import targets
from tasks.core import store
from tasks.core.outcomes import ConfigOutcome, Gated, Recorded, Registration
from tasks.core.records import DatasetRef, ExportedModel, Plan
from tasks.core.results import BaselineResult
from tasks.core.settings import Settings
from tasks.core.store import STAGES_DIR
from tasks.report.records import BaselineSummary, ConfigRow, MlflowLinks, ModelSummary, RunReport

T = TypeVar("T", bound=BaseModel)


def _first_failure(stages: str, listed: list[str]) -> dict | None:
    """The stage that failed first (a later one may have failed only for want of its result); ``listed``: the names
    under ``stages``."""
    names = [name for name in listed if name.endswith(".error.json")]
    errors = [e for e in (store.read_json(store.join(stages, name)) for name in names) if e and e.get("error")]
    return min(errors, key=lambda e: (e.get("at") or 0, e.get("stage", ""), e.get("key", "")), default=None)


def _baseline_summary(baseline: BaselineResult) -> BaselineSummary:
    best = baseline.benchmark.best
    return BaselineSummary(
        framework=baseline.framework,
        host_class=baseline.host_class,
        host=baseline.benchmark.machine.host if baseline.benchmark.machine else None,
        top1=baseline.predictions.top1,
        top5=baseline.predictions.top5,
        samples=baseline.predictions.samples,
        probe_top5=baseline.predictions.probe_top5,
        throughput=best.throughput if best else None,
        batch_size=best.batch_size if best else None,
        benchmark=baseline.benchmark.points,
        benchmark_seconds=baseline.benchmark.seconds,
    )


def _config_row(outcome: ConfigOutcome, baselines: dict[str, BaselineSummary]) -> ConfigRow:
    compiled, validation, bench = outcome.compiled, outcome.validation, outcome.benchmark
    config = compiled.config
    host_class = targets.get(config.target).run_queue
    baseline = baselines.get(host_class)
    best = bench.best if bench else None
    predictions = validation.predictions if validation else None
    return ConfigRow(
        key=config.key,
        target=config.target,
        precision=config.precision,
        batch_size=best.batch_size if best else config.batch_size,
        compile_status=compiled.status,
        compile_reason=compiled.reason,
        compile_seconds=compiled.compile_seconds,
        compile_stage_seconds=compiled.stage_seconds,
        compile_peak_memory_mb=compiled.peak_memory_mb,
        compile_cache=compiled.cache,
        compile_report=compiled.report,
        compiler=compiled.compiler,
        compiler_version=compiled.compiler_version,
        artifact_sha256=compiled.sha256,
        artifact_uri=compiled.uri,
        top1=predictions.top1 if predictions else None,
        top5=predictions.top5 if predictions else None,
        samples=predictions.samples if predictions else None,
        sequence_length=config.sequence_length,
        outputs=validation.outputs if validation else [],
        probe_top5=predictions.probe_top5 if predictions else [],
        throughput=best.throughput if best else None,
        speedup=best.throughput / baseline.throughput if best and baseline and baseline.throughput else None,
        host_class=host_class,
        hosts={
            "compiled": compiled.host,
            "validated": validation.host if validation else "",
            "benchmarked": bench.machine.host if bench and bench.machine else "",
            "baseline": (baseline.host if baseline else None) or "",
        },
        latency_ms={"p50": best.latency_ms_p50, "p90": best.latency_ms_p90, "p99": best.latency_ms_p99}
        if best
        else None,
        benchmark=bench.points if bench else [],
        benchmark_seconds=bench.seconds if bench else None,
        gate=outcome.gate,
        gate_reasons=outcome.gate_reasons,
        gate_findings=outcome.gate_findings,
        mlflow_run_id=outcome.mlflow_run_id,
    )


# The stages every successful run leaves a result of, in order (compile, validate and benchmark failures are results).
RESULT_STAGES = ("start", "export", "prepare_dataset", "plan", "gate", "record", "register")


def build(run_uri: str, run_id: str, settings: Settings) -> RunReport:
    stages = store.join(run_uri, STAGES_DIR)

    def _load(name: str, record: type[T]) -> T | None:
        data = store.read_json(store.join(stages, name))
        return None if data is None else record.model_validate(data)

    start = store.read_json(store.join(stages, "start.json")) or {}
    exported = _load("export.json", ExportedModel)
    plan = _load("plan.json", Plan)
    # one baseline per host class that ran configs (baseline-<class>.json); the CPU hosts' is the report's main one
    listed = store.list_files(stages)  # one listing for the baselines and the errors
    named = [n for n in listed if n.startswith("baseline-") and not n.endswith("error.json")]
    found = [b for b in (_load(n, BaselineResult) for n in named) if b]
    baselines = {b.host_class: _baseline_summary(b) for b in found}
    recorded = _load("record.json", Recorded)
    outcomes = recorded.outcomes if recorded else (_load("gate.json", Gated) or Gated(outcomes=[])).outcomes
    registration = _load("register.json", Registration)
    failure = _first_failure(stages, listed)
    if failure is None and registration is None:
        # A stage that ended without its result and without an error in the store: its task died, or could not
        # write to the run store (another host's file:// store); its task log says why.
        missing = next(n for n in RESULT_STAGES if store.read_json(store.join(stages, f"{n}.json")) is None)
        failure = {"stage": missing, "error": f"stage {missing} left no result in the run store {run_uri}: its task "
                   "failed before it could write one (see that task's log)"}  # fmt: skip
    params = start.get("params") or store.read_json(store.join(stages, "start.params.json"))
    cpu = baselines.get("cpu") or next(iter(baselines.values()), None)
    machine = next((b.benchmark.machine for b in found if b.host_class == "cpu"), None)
    return RunReport(
        run_id=run_id,
        status="failed" if failure else "success",
        failed_stage=failure["stage"] if failure else None,
        error=failure["error"] if failure else None,
        params=params,
        model=exported
        and ModelSummary(
            name=exported.name,
            framework=exported.framework,
            architecture=exported.architecture,
            parameters=exported.parameters,
            sha256=exported.source_sha256,
            source_uri=exported.source_uri,
            inputs=exported.inputs,
            flops_per_sample=exported.flops_per_sample,
            model_code=exported.model_code,
        ),
        machine=machine or (found[0].benchmark.machine if found else None),
        dataset=_load("prepare_dataset.json", DatasetRef),
        baseline=cpu,
        baselines=baselines,
        configs=[_config_row(o, baselines) for o in outcomes],
        skipped_targets={s.subject: s.reason for s in plan.skipped} if plan else {},
        selected=registration.selected if registration else None,
        selected_point=registration.selected_point if registration else None,
        selection=(params or {}).get("selection"),
        mlflow=MlflowLinks(
            tracking_uri=settings.mlflow_tracking_uri,
            experiment=settings.experiment,
            run_id=recorded.run_id if recorded else None,
            registered_model=registration.registered_model if registration else None,
            version=registration.version if registration else None,
            alias=registration.alias if registration else None,
        ),
    )
