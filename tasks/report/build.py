"""The run report's data (report.json): one dict built from the run's stage records in the run store: the
run's status and first failure, the model, dataset, CPU baselines, a row per config, and the registration."""

from __future__ import annotations

from typing import Any

from tasks import targets
from tasks.core import store
from tasks.core.records import CompileConfig
from tasks.core.settings import Settings
from tasks.core.store import STAGES_DIR


def _first_failure(stages: str, listed: list[str]) -> dict | None:
    """The stage that failed first (a later one may have failed only for want of its result); ``listed``: the names
    under ``stages``."""
    names = [name for name in listed if name.endswith(".error.json")]
    errors = [e for e in (store.read_json(store.join(stages, name)) for name in names) if e and e.get("error")]
    return min(errors, key=lambda e: (e.get("at") or 0, e.get("stage", ""), e.get("key", "")), default=None)


def _baseline_summary(baseline: dict) -> dict:
    points = (baseline.get("benchmark") or {}).get("points", [])
    best = max(points, key=lambda p: p["throughput"], default=None)
    return {
        "framework": baseline["framework"],
        "host_class": baseline.get("host_class", "cpu"),
        "host": ((baseline.get("benchmark") or {}).get("machine") or {}).get("host"),
        "top1": baseline["predictions"]["top1"],
        "top5": baseline["predictions"]["top5"],
        "samples": baseline["predictions"].get("samples"),
        "probe_top5": baseline["predictions"]["probe_top5"],
        "throughput": best["throughput"] if best else None,
        "batch_size": best["batch_size"] if best else None,
        "benchmark": points,
        "benchmark_seconds": (baseline.get("benchmark") or {}).get("seconds"),
    }


def _config_row(outcome: dict, baselines: dict[str, dict]) -> dict:
    compiled, validation, bench = outcome["compiled"], outcome.get("validation") or {}, outcome.get("benchmark") or {}
    config = CompileConfig.model_validate(compiled["config"])
    host_class = targets.get(config.target).run_queue
    base_throughput = (baselines.get(host_class) or {}).get("throughput")
    points = bench.get("points") or []
    best = max(points, key=lambda p: p["throughput"], default=None)
    predictions = validation.get("predictions") or {}
    outputs = validation.get("outputs") or []
    # one-figure columns show one output: the class scores where labels judge one, else the first
    primary = next((o for o in outputs if o.get("class_scores")), outputs[0] if outputs else {})
    return {
        "key": config.key,
        "target": config.target,
        "precision": config.precision,
        "batch_size": best["batch_size"] if best else config.batch_size,
        "compile_status": compiled["status"],
        "compile_reason": compiled["reason"],
        "compile_seconds": compiled["compile_seconds"],
        "compile_stage_seconds": compiled.get("stage_seconds"),
        "compile_peak_memory_mb": compiled.get("peak_memory_mb"),
        "compile_cache": compiled.get("cache", "off"),
        "compile_report": compiled.get("report"),
        "compiler": compiled["compiler"],
        "compiler_version": compiled["compiler_version"],
        "artifact_sha256": compiled["sha256"],
        "artifact_uri": compiled["uri"],
        "top1": predictions.get("top1"),
        "top5": predictions.get("top5"),
        "samples": predictions.get("samples"),  # fewer than the dataset's: a bucket's samples that fit it
        "sequence_length": config.sequence_length,
        "top1_delta": primary.get("top1_delta"),
        "top5_delta": primary.get("top5_delta"),
        "top5_agreement": primary.get("top5_agreement"),
        "top1_agreement": primary.get("top1_agreement"),
        "top1_in_top5": primary.get("top1_in_top5"),
        "top1_probability_shift": primary.get("top1_probability_shift"),
        "max_abs_diff": primary.get("max_abs_diff"),
        "max_rel_diff": primary.get("max_rel_diff"),
        "cosine_min": primary.get("cosine_min"),
        "neighbour_recall": primary.get("neighbour_recall"),
        "out_of_tolerance": primary.get("out_of_tolerance"),
        "nonfinite_outputs": sum(check.get("nonfinite", 0) for check in outputs),
        "intervals": primary.get("intervals") or {},
        "outputs": outputs,
        "probe_top5": predictions.get("probe_top5", []),
        "throughput": best["throughput"] if best else None,
        # against the CPU baseline measured on the same host class
        "speedup": best["throughput"] / base_throughput if best and base_throughput else None,
        "host_class": host_class,
        "hosts": {
            "compiled": compiled.get("host", ""),
            "validated": validation.get("host", ""),
            "benchmarked": (bench.get("machine") or {}).get("host", ""),
            "baseline": (baselines.get(host_class) or {}).get("host") or "",
        },
        "latency_ms": {k: best[f"latency_ms_{k}"] for k in ("p50", "p90", "p99")} if best else None,
        "benchmark": points,
        "benchmark_seconds": bench.get("seconds"),
        "gate": outcome["gate"],
        "gate_reasons": outcome["gate_reasons"],
        "mlflow_run_id": outcome.get("mlflow_run_id", ""),
    }


# The stages every successful run leaves a result of, in order (compile, validate and benchmark failures are results).
RESULT_STAGES = ("start", "export", "prepare_dataset", "plan", "gate", "record", "register")


def build(run_uri: str, run_id: str, settings: Settings) -> dict:
    stages = store.join(run_uri, STAGES_DIR)

    def _load(name: str) -> Any:
        return store.read_json(store.join(stages, name))

    start = _load("start.json") or {}
    exported = _load("export.json")
    dataset = _load("prepare_dataset.json")
    plan = _load("plan.json") or {}
    # one baseline per host class that ran configs (baseline-<class>.json); the CPU hosts' is the report's main one
    listed = store.list_files(stages)  # one listing for the baselines and the errors
    found = [_load(n) for n in listed if n.startswith("baseline-") and not n.endswith("error.json")]
    baselines = {b.get("host_class", "cpu"): _baseline_summary(b) for b in found if b}
    baseline = next((b for b in found if b and b.get("host_class", "cpu") == "cpu"), found[0] if found else None)
    recorded = _load("record.json")
    outcomes = (recorded or {}).get("outcomes") or (_load("gate.json") or {}).get("outcomes") or []
    registration = _load("register.json")
    failure = _first_failure(stages, listed)
    if failure is None and registration is None:
        # A stage that ended without its result and without an error in the store: its task died, or could not
        # write to the run store (another host's file:// store); its task log says why.
        missing = next(name for name in RESULT_STAGES if _load(f"{name}.json") is None)
        failure = {"stage": missing, "error": f"stage {missing} left no result in the run store {run_uri}: its task "
                   "failed before it could write one (see that task's log)"}  # fmt: skip

    return {
        "run_id": run_id,
        "status": "failed" if failure else "success",
        "failed_stage": failure["stage"] if failure else None,
        "error": failure["error"] if failure else None,
        "params": start.get("params") or _load("start.params.json"),
        "model": exported
        and {
            "name": exported["name"],
            "framework": exported["framework"],
            "architecture": exported["architecture"],
            "parameters": exported["parameters"],
            "sha256": exported["source_sha256"],
            "source_uri": exported["source_uri"],
            "inputs": exported["inputs"],
            "flops_per_sample": exported.get("flops_per_sample"),
            "model_code": exported.get("model_code", ""),
        },
        "machine": ((baseline or {}).get("benchmark") or {}).get("machine"),
        "dataset": dataset,
        "baseline": baseline and _baseline_summary(baseline),
        "baselines": baselines,
        "configs": [_config_row(o, baselines) for o in outcomes],
        "skipped_targets": {s["subject"]: s["reason"] for s in plan.get("skipped", [])},
        "selected": registration and registration["selected"],
        "selected_point": registration and registration.get("selected_point"),
        "selection": (start.get("params") or {}).get("selection"),
        "mlflow": {
            "tracking_uri": settings.mlflow_tracking_uri,
            "experiment": settings.experiment,
            "run_id": recorded and recorded["run_id"],
            "registered_model": registration and registration["registered_model"],
            "version": registration and registration["version"],
            "alias": registration and registration["alias"],
        },
    }
