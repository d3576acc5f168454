"""The pipeline's steps at JSON level: what the DAG's tasks call, and what a local run calls.

Every step saves its result (or its error) under ``<run_dir>/stages/`` so the run
report can say what each stage produced and which one failed, and why, whether
or not later stages ran.
"""

from __future__ import annotations

import contextlib
import json
import re
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks import settings as settings_module
from tasks.faults import named_unreachable
from tasks.files import write_json
from tasks.records import (
    BaselineResult,
    BenchmarkResult,
    CompileConfig,
    CompiledArtifact,
    ConfigOutcome,
    DatasetRef,
    ExportedModel,
    PipelineParams,
    RunContext,
    ValidationResult,
)

STAGES = "stages"
PROGRESS_MARK = "[pipeline]"


def run_dir_for(run_id: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"
    return settings_module.load().runs_dir / safe


def _stage_file(ctx: RunContext, stage: str, key: str = "") -> Path:
    return Path(ctx.run_dir) / STAGES / (f"{stage}-{key}" if key else stage)


@contextlib.contextmanager
def _recorded(ctx: RunContext, stage: str, key: str = "") -> Iterator[None]:
    """Save a stage's exception (type, message, traceback) before it propagates."""
    base = _stage_file(ctx, stage, key)
    Path(f"{base}.error.json").unlink(missing_ok=True)
    try:
        with named_unreachable(settings_module.load()):
            yield
    except Exception as exc:
        write_json(
            f"{base}.error.json",
            {"stage": stage, "key": key, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()},
        )
        raise


def _save(ctx: RunContext, stage: str, result: Any, key: str = "") -> Any:
    write_json(f"{_stage_file(ctx, stage, key)}.json", result)
    return result


def harness(params: PipelineParams):
    """The benchmark harness as the params set it, for the baseline and every config alike."""
    from tasks.benchmark import Harness

    return Harness(window_s=params.benchmark_window_s, max_concurrency=params.max_concurrency)


def machine_context():
    """This worker's CPU, cores and measured matmul peak (measured once per host, kept under the home)."""
    from tasks import machine

    return machine.context(settings_module.load().home / "machine")


def _point(point) -> str:
    stability = "" if point.stable else f", unstable (spread {point.spread:.0%})"
    return f"{point.throughput:.1f} samples/s at batch {point.shape}, p99 {point.latency_ms_p99:.1f} ms{stability}"


def progress(stage: str, message: str) -> None:
    """One line per finished step; the demo shows these lines out of Airflow's log."""
    print(f"{PROGRESS_MARK} {stage:<9} {message}", flush=True)


def start(params: dict, run_id: str) -> dict:
    """Check the params and make the run's directory."""
    from tasks.plan import check_params

    run_dir = run_dir_for(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        parsed = PipelineParams.model_validate(params)
        check_params(parsed)
    except Exception as exc:
        write_json(run_dir / STAGES / "start.error.json", {"stage": "start", "error": f"{type(exc).__name__}: {exc}"})
        write_json(run_dir / STAGES / "start.params.json", params)
        raise
    ctx = RunContext(run_id=run_id, run_dir=str(run_dir), params=parsed)
    progress(
        "start", f"run {run_id}: model {parsed.model_name}, targets {parsed.targets}, precisions {parsed.precisions}"
    )
    return _save(ctx, "start", ctx.to_json())


def export(ctx: dict) -> dict:
    from tasks.export import export_model

    run = RunContext.model_validate(ctx)
    with _recorded(run, "export"):
        exported = export_model(run.params, Path(run.run_dir) / "export")
    progress(
        "export",
        f"{exported.name}: {exported.parameters:,} parameters, sha256 {exported.source_sha256[:12]}, "
        f"formats {', '.join(exported.formats)}",
    )
    return _save(run, "export", exported.to_json())


def prepare_dataset(ctx: dict, exported: dict) -> dict:
    from tasks import dataset

    run = RunContext.model_validate(ctx)
    with _recorded(run, "dataset"):
        ref = dataset.prepare(run.params.dataset, Path(run.run_dir) / "dataset", ExportedModel.model_validate(exported))
    progress(
        "dataset",
        f"{ref.name}: {ref.samples} {'labelled ' if ref.labelled else ''}samples for inputs {', '.join(ref.inputs)}",
    )
    return _save(run, "dataset", ref.to_json())


def plan(ctx: dict, exported: dict) -> list[dict]:
    from tasks.plan import plan_configs

    run = RunContext.model_validate(ctx)
    with _recorded(run, "plan"):
        configs, skipped = plan_configs(run.params, ExportedModel.model_validate(exported))
    progress(
        "plan",
        f"{len(configs)} configs: {', '.join(c.key for c in configs)}"
        + "".join(f"; skipped {k}: {v}" for k, v in skipped.items()),
    )
    _save(run, "plan", {"configs": [c.to_json() for c in configs], "skipped": skipped})
    return [c.to_json() for c in configs]


def config_key(config: dict) -> str:
    return CompileConfig.model_validate(config).key


def compile(ctx: dict, exported: dict, dataset: dict, config: dict) -> dict:
    from tasks.compile import compile_config
    from tasks.compile_cache import open_cache
    from tasks.files import local_path

    run = RunContext.model_validate(ctx)
    cfg = CompileConfig.model_validate(config)
    data = DatasetRef.model_validate(dataset)
    settings = settings_module.load()
    with _recorded(run, "compile", cfg.key):
        artifact = compile_config(
            ExportedModel.model_validate(exported),
            cfg,
            Path(run.run_dir) / "compiled",
            timeout_s=run.params.compile_timeout_s,
            memory_mb=run.params.compile_memory_mb,
            cache=open_cache(settings.compile_cache_uri, settings.s3_endpoint_url)
            if run.params.compile_cache
            else None,
            calibration=local_path(data.calibration_uri) if data.calibration_uri else None,
        )
    cache_note = {"hit": ", from the compile cache", "rebuilt": ", cache entry was corrupt and is rebuilt"}
    progress(
        "compile",
        f"{cfg.key}: {artifact.status} in {artifact.stage_seconds:.1f} s"
        f"{cache_note.get(artifact.cache, '')}, peak {artifact.peak_memory_mb:.0f} MiB {artifact.reason}".rstrip(),
    )
    return _save(run, "compile", artifact.to_json(), cfg.key)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def baseline(ctx: dict, exported: dict, dataset: dict) -> dict:
    from tasks.benchmark import benchmark_baseline
    from tasks.validate import baseline_predictions

    run = RunContext.model_validate(ctx)
    model, data = ExportedModel.model_validate(exported), DatasetRef.model_validate(dataset)
    with _recorded(run, "baseline"):
        result = BaselineResult(
            framework=model.framework,
            predictions=baseline_predictions(model, data, Path(run.run_dir) / "outputs"),
            benchmark=benchmark_baseline(model, data, run.params.batch_sizes, harness(run.params)).model_copy(
                update={"machine": machine_context()}
            ),
        )
    progress(
        "baseline",
        f"{model.framework} on CPU: top-1 {_fmt(result.predictions.top1)}, top-5 {_fmt(result.predictions.top5)}, "
        f"best {_point(result.benchmark.best)}",
    )
    return _save(run, "baseline", result.to_json())


def validate(ctx: dict, artifact: dict, dataset: dict, baseline: dict) -> dict:
    from tasks.validate import validate_artifact

    run = RunContext.model_validate(ctx)
    compiled = CompiledArtifact.model_validate(artifact)
    with _recorded(run, "validate", compiled.config.key):
        result = validate_artifact(
            compiled,
            DatasetRef.model_validate(dataset),
            BaselineResult.model_validate(baseline),
            Path(run.run_dir) / "outputs",
            atol=run.params.atol,
            rtol=run.params.rtol,
        )
    if result.status == "ok" and result.nonfinite_outputs:
        progress("validate", f"{compiled.config.key}: {result.nonfinite_outputs} NaN or Inf output values")
    elif result.status == "ok":
        progress(
            "validate",
            f"{compiled.config.key}: top-5 {_fmt(result.predictions.top5)} ({_fmt(result.top5_delta, '+.2f')} pp), "
            f"top-5 agreement {_fmt(result.top5_agreement)}, lowest cosine {result.cosine_min:.5f}",
        )
    else:
        progress("validate", f"{compiled.config.key}: failed, {result.reason}")
    return _save(run, "validate", result.to_json(), compiled.config.key)


def benchmark(ctx: dict, artifact: dict, dataset: dict) -> dict:
    from tasks.benchmark import benchmark_artifact

    run = RunContext.model_validate(ctx)
    compiled = CompiledArtifact.model_validate(artifact)
    with _recorded(run, "benchmark", compiled.config.key):
        result = benchmark_artifact(
            compiled, DatasetRef.model_validate(dataset), run.params.batch_sizes, harness(run.params)
        ).model_copy(update={"machine": machine_context()})
    best = result.best
    progress(
        "benchmark",
        f"{compiled.config.key}: " + (f"best {_point(best)}" if best else f"failed, {result.reason}"),
    )
    return _save(run, "benchmark", result.to_json(), compiled.config.key)


def gate(ctx: dict, artifacts: list[dict], validations: list[dict], benchmarks: list[dict]) -> list[dict]:
    """Join each config's compile, validation and benchmark results (by config key) and gate them."""
    from tasks.gate import gate_all, gate_dir

    run = RunContext.model_validate(ctx)
    with _recorded(run, "gate"):
        by_key_v = {(v := ValidationResult.model_validate(x)).config.key: v for x in validations}
        by_key_b = {(b := BenchmarkResult.model_validate(x)).subject: b for x in benchmarks}
        outcomes = [
            o.to_json()
            for o in gate_all(
                [CompiledArtifact.model_validate(a) for a in artifacts],
                by_key_v,
                by_key_b,
                run.params,
                gate_dir(run.run_dir),
            )
        ]
    for o in outcomes:
        progress(
            "gate",
            f"{CompileConfig.model_validate(o['compiled']['config']).key}: {o['gate']} " + "; ".join(o["gate_reasons"]),
        )
    return _save(run, "gate", outcomes)


def record(ctx: dict, exported: dict, dataset: dict, baseline: dict, outcomes: list[dict]) -> dict:
    from tasks.tracking import record as record_runs

    run = RunContext.model_validate(ctx)
    settings = settings_module.load()
    skipped = json.loads(_stage_file(run, "plan").with_suffix(".json").read_text())["skipped"]
    with _recorded(run, "record"):
        parent_run_id, recorded = record_runs(
            settings,
            run,
            ExportedModel.model_validate(exported),
            DatasetRef.model_validate(dataset),
            BaselineResult.model_validate(baseline),
            [ConfigOutcome.model_validate(o) for o in outcomes],
            skipped,
        )
    progress("record", f"MLflow run {parent_run_id} with {len(recorded)} config runs at {settings.mlflow_tracking_uri}")
    return _save(
        run,
        "record",
        {
            "tracking_uri": settings.mlflow_tracking_uri,
            "experiment": settings.experiment,
            "run_id": parent_run_id,
            "outcomes": [o.to_json() for o in recorded],
        },
    )


def register(ctx: dict, exported: dict, dataset: dict, recorded: dict) -> dict:
    from tasks.gate import select
    from tasks.tracking import register as register_version

    run = RunContext.model_validate(ctx)
    with _recorded(run, "register"):
        outcomes = [ConfigOutcome.model_validate(o) for o in recorded["outcomes"]]
        choice = select(outcomes, run.params.selection, run.params.latency_budget_ms)
        if choice is None:
            if any(o.gate == "pass" for o in outcomes):
                raise RuntimeError(
                    f"no gate-passing config has a measured point with p99 within {run.params.latency_budget_ms} ms "
                    "(selection max_throughput_under_latency); nothing is registered"
                )
            reasons = "; ".join(f"{o.compiled.config.key}: {', '.join(o.gate_reasons)}" for o in outcomes)
            raise RuntimeError(f"no config passed the gate, nothing is registered ({reasons})")
        selected, point = choice
        registration = register_version(
            settings_module.load(),
            run,
            ExportedModel.model_validate(exported),
            selected,
            point,
            DatasetRef.model_validate(dataset),
            recorded["run_id"],
        )
    progress(
        "register",
        f"{selected.compiled.config.key} at batch {point.shape} "
        f"({run.params.selection}) as {registration.registered_model} version {registration.version}, "
        f"alias {registration.alias}",
    )
    return _save(
        run,
        "register",
        {"selected": selected.compiled.config.key, "selected_point": point.to_json(), **registration.to_json()},
    )


def finalize(ctx: dict | None, run_id: str) -> str:
    """Write the run report from the stages' saved results; raise if the pipeline failed."""
    from tasks import report

    run_dir = Path(ctx["run_dir"]) if ctx else run_dir_for(run_id)
    path, failure = report.write(run_dir, run_id, settings_module.load())
    if failure:
        raise RuntimeError(f"pipeline failed at stage {failure['stage']}: {failure['error']} (report: {path})")
    return str(path)
