"""The run report: JSON for machines, Markdown and HTML (with the benchmark plots) for people,
built from the stages' saved results."""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any

from tasks import targets
from tasks.benchmark.machine import peak_share
from tasks.core import store
from tasks.core.files import write_atomic, write_json
from tasks.core.mlflow_client import client as mlflow_client
from tasks.core.records import BenchmarkPoint, BenchmarkResult, CompileConfig, MachineContext, Status
from tasks.core.settings import Settings
from tasks.core.store import STAGES_DIR
from tasks.report import plots as plotting
from tasks.report.tables import Table, render

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): mlflow.


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


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _model_lines(report: dict) -> list[str]:
    model = report["model"]
    if not model:
        return []
    code = model.get("model_code") or "none: weights and graphs only, nothing in the model file is executed"
    return [
        f"Model {model['name']} ({model['framework']}, {model['parameters']:,} parameters), "
        f"sha256 {model['sha256'][:16]}…",
        f"Code from the model file: {code}",
        *_text_lines(report),
    ]


def _text_lines(report: dict) -> list[str]:
    """How the validation text fit the model's sequence length: never cut silently."""
    dataset = report.get("dataset") or {}
    if not dataset.get("sequence_length"):
        return []
    cut = dataset.get("truncated_samples", 0)
    return [
        f"Validation text: {dataset['samples']} samples at {dataset['sequence_length']} tokens; {cut} cut to fit"
        + (" (most of them: the gate refuses judging a model on cut text; raise sequence_length)"
           if cut * 2 > dataset["samples"] else "")
    ]  # fmt: skip


def _selected_line(report: dict) -> str:
    if not report["selected"]:
        return ""
    mlflow = report["mlflow"]
    return (
        f"Selected {report['selected']}, registered as {mlflow['registered_model']} "
        f"version {mlflow['version']} (alias {mlflow['alias']})."
    )


def markdown(report: dict) -> str:
    lines = [f"# Compile pipeline run `{report['run_id']}`: {report['status']}", ""]
    if report["error"]:
        lines += [f"**Failed at stage `{report['failed_stage']}`:** {report['error']}", ""]
    for line in _model_lines(report):
        lines += [line, ""]
    lines += accuracy_table(report).markdown() + [""] + _outputs_lines(report) + throughput_table(report).markdown()
    lines += ["", machine_line(report), ""] + compile_table(report).markdown() + [""]
    lines += hosts_table(report).markdown() + [""]
    if report["skipped_targets"]:
        lines += ["Skipped targets:", *[f"- {k}: {v}" for k, v in report["skipped_targets"].items()], ""]
    if report["selected"]:
        lines.append(_selected_line(report))
    return "\n".join(lines) + "\n"


def _shows_outputs(report: dict) -> bool:
    """Per-output figures are worth a table for several outputs, or any output not judged as class scores."""
    return any(
        len(c["outputs"]) > 1 or any(o.get("rule", "class scores") != "class scores" for o in c["outputs"])
        for c in report["configs"]
    )


def _outputs_lines(report: dict) -> list[str]:
    return [*outputs_table(report).markdown(), ""] if _shows_outputs(report) else []


def outputs_table(report: dict) -> Table:
    """Every output of every validated config against the baseline's."""
    table = Table(
        ["config", "output", "judged by", "lowest cosine", "max abs diff", "out of tolerance", "top-1 agreement",
         "top-1 probability shift", "top-5 set agreement", "neighbour recall@5", "similarity rank correlation"]
    )  # fmt: skip
    for c in report["configs"]:
        for check in c["outputs"]:
            # the rule that judged it (records.OUTPUT_RULES); reports before rules were named: by class_scores
            judged = check.get("rule") or ("class scores" if check.get("class_scores") else "tensor")
            if check.get("constant"):
                judged += " (constant output)"
            table.rows.append(
                [
                    c["key"],
                    check["name"],
                    judged,
                    _fmt(check.get("cosine_min"), ".5f"),
                    _fmt(check.get("max_abs_diff"), ".4f"),
                    _fmt(check.get("out_of_tolerance"), ".2%"),
                    _with_interval(_fmt, check, "top1_agreement"),
                    _with_interval(_fmt, check, "top1_probability_shift"),
                    _fmt(check.get("top5_agreement")),
                    _with_interval(_fmt, check, "neighbour_recall"),
                    _fmt(check.get("similarity_rank_correlation")),
                ]
            )
    return table


def accuracy_table(report: dict) -> Table:
    baseline = report["baseline"]
    labelled = bool((report.get("dataset") or {}).get("labelled"))
    accuracy = _fmt if labelled else (lambda value, spec=".3f": "n/a")  # no labels: no accuracy to show
    table = Table(
        ["config", "top-1", "top-5", "top-1 Δ (pp)", "top-5 Δ (pp)", "top-1 agreement", "baseline top-1 in top-5",
         "top-1 probability shift", "top-5 set agreement", "lowest cosine", "max abs diff", "gate"]
    )  # fmt: skip
    if baseline:
        table.rows.append(
            [f"CPU baseline ({baseline['framework']})", accuracy(baseline["top1"]), accuracy(baseline["top5"])]
            + [""] * 9
        )
    for c in report["configs"]:
        reasons = f" ({'; '.join(c['gate_reasons'])})" if c["gate_reasons"] else ""
        fewer = baseline and c.get("samples") and c["samples"] != baseline.get("samples")
        table.rows.append(
            [
                c["key"] + (f" ({c['samples']} samples fit {c['sequence_length']} tokens)" if fewer else ""),
                accuracy(c["top1"]),
                accuracy(c["top5"]),
                _with_interval(accuracy, c, "top1_delta", "+.2f"),
                _with_interval(accuracy, c, "top5_delta", "+.2f"),
                _with_interval(accuracy, c, "top1_agreement"),
                _with_interval(accuracy, c, "top1_in_top5"),
                _with_interval(accuracy, c, "top1_probability_shift"),
                accuracy(c["top5_agreement"]),
                _fmt(c.get("cosine_min"), ".5f"),
                _fmt(c["max_abs_diff"], ".4f"),
                f"{c['gate']}{reasons}",
            ]
        )
    return table


def _with_interval(formatter, config: dict, figure: str, spec: str = ".3f") -> str:
    """A figure and its 95 % interval, ``+0.40 [-1.20, +2.01]``; the figure alone where it has none."""
    shown = formatter(config.get(figure), spec)
    bounds = (config.get("intervals") or {}).get(figure)
    if bounds is None or shown in ("-", "n/a"):
        return shown
    return f"{shown} [{format(bounds[0], spec)}, {format(bounds[1], spec)}]"


def hosts_table(report: dict) -> Table:
    """Where each config's figures came from: its host class, and the workers that compiled, validated and
    benchmarked it and measured the CPU baseline its speedup divides by."""
    table = Table(["config", "host class", "compiled on", "validated on", "benchmarked on", "baseline on"])
    for c in report["configs"]:
        hosts = c.get("hosts") or {}
        table.rows.append(
            [c["key"], c.get("host_class", "")]
            + [hosts.get(k) or "-" for k in ("compiled", "validated", "benchmarked", "baseline")]
        )
    return table


def compile_table(report: dict) -> Table:
    """Per config: compiler and flags, operators on the device, seconds, peak memory, cache use, NEFFs, and the
    compiler's notes (e.g. which layers int8 left in float)."""
    table = Table(
        ["config", "compiler", "flags", "ops on device", "compile s", "stage s", "peak MiB", "cache", "device binaries",
         "notes"]
    )  # fmt: skip
    for c in report["configs"]:
        r = c.get("compile_report") or {}
        ops = "-"
        if r.get("operators_total"):
            ops = f"{r.get('operators_on_device')}/{r['operators_total']} on {r.get('device', '?')}"
        table.rows.append(
            [
                c["key"],
                f"{c['compiler'] or '-'} {c['compiler_version']}",
                " ".join(r.get("flags", [])) or "-",
                ops,
                _fmt(c["compile_seconds"], ".1f"),
                _fmt(c.get("compile_stage_seconds"), ".1f"),
                _fmt(c.get("compile_peak_memory_mb"), ".0f"),
                c.get("compile_cache", "off"),
                str(len(r.get("device_binaries", []))),
                "; ".join(r.get("notes", [])) or "-",
            ]
        )
    return table


def throughput_table(report: dict) -> Table:
    """Per subject: the best point of its sweep, against single-stream batch 1, the best CPU baseline
    and the machine's matmul peak; unstable points and idle devices show here."""
    model = report["model"] or {}
    baselines = report.get("baselines") or ({"cpu": report["baseline"]} if report["baseline"] else {})
    several = len(baselines) > 1  # each host class's rows name it, beside its own baseline
    subjects = []
    for host_class, base in baselines.items():
        name = f"CPU baseline ({host_class} hosts)" if several else "CPU baseline"
        subjects.append((name, "fp32", base["benchmark"], base["throughput"]))
        subjects += [
            (f"{c['key']} ({host_class} hosts)" if several else c["key"], c["precision"], c["benchmark"],
             base["throughput"])
            for c in report["configs"] if c.get("host_class", "cpu") == host_class
        ]  # fmt: skip
    subjects += [
        (c["key"], c["precision"], c["benchmark"], None)
        for c in report["configs"]
        if c.get("host_class", "cpu") not in baselines
    ]
    machine = report.get("machine") and MachineContext.model_validate(report["machine"])
    table = Table(
        ["samples/s", "best point (batch x streams)", "p50 / p99 ms", "single stream, batch 1", "tuned / naive",
         "speedup vs CPU", "spread", "% of peak", "utilisation"]
    )  # fmt: skip
    for name, precision, points, base_best in subjects:
        if not points:
            table.rows.append([name] + ["-"] * 8)
            continue
        result = BenchmarkResult(subject=name, status=Status.OK, points=points)
        best, naive = result.best, result.naive
        share = machine and peak_share(best.throughput, model.get("flops_per_sample"), precision, machine)
        stable = "" if best.stable else " (unstable)"
        table.rows.append(
            [
                name,
                f"{best.throughput:.1f} at {best.shape}{stable}",
                f"{best.latency_ms_p50:.1f} / {best.latency_ms_p99:.1f}",
                _fmt(naive and naive.throughput, ".1f"),
                f"{_fmt(naive and best.throughput / naive.throughput, '.2f')}x",
                f"{_fmt(base_best and best.throughput / base_best, '.2f')}x",
                f"{best.spread:.1%}",
                _peak_cell(share),
                f"{best.device} {' '.join(f'{u:.0f}%' for u in best.utilisation) or '-'}",
            ]
        )
    return table


def _peak_cell(share: float | None) -> str:
    """A share of the measured peak; above 100 % the peak was measured low (a busy host), which is said, not shown
    as if the model beat the machine."""
    if share is None:
        return "-"
    if share > 1:
        return f"over 100 ({100 * share:.0f}): peak measured low, a measurement error"
    return f"{100 * share:.1f}"


def machine_line(report: dict) -> str:
    machine, model = report.get("machine"), report["model"] or {}
    if not machine:
        return ""
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["peak_gflops"].items())
    flops = model.get("flops_per_sample")
    return (
        f"machine: {machine['cpu_model']}, {machine['cores_physical']} cores ({machine['cores_logical']} threads), "
        f"measured matmul peak GFLOP/s: {peaks}; model: "
        + (f"{flops / 1e9:.3f} GFLOPs per sample" if flops else "FLOPs not counted")
    )


def probe_table(report: dict) -> Table | None:
    """The probe photo's top-5 from the CPU model and each compiled config, side by side."""
    columns = []
    if report["baseline"] and report["baseline"]["probe_top5"]:  # none on data without class names
        columns.append(("CPU baseline", report["baseline"]["probe_top5"]))
    columns += [(c["key"], c["probe_top5"]) for c in report["configs"] if c["probe_top5"]]
    if not columns:
        return None
    photo = (report["dataset"] or {}).get("probe", "probe")
    table = Table(["rank", *(n for n, _ in columns)], caption=f"Top-5 classes of {photo}:")
    for rank in range(5):
        cells = [f"{top[rank]['name']} {top[rank]['probability']:.3f}" if rank < len(top) else "" for _, top in columns]
        table.rows.append([str(rank + 1), *cells])
    return table


def summary(report: dict, report_path: Path | str) -> str:
    """What the demo prints at the end; the last line is the report's path."""
    lines = [f"pipeline run {report['run_id']}: {report['status'].upper()}"]
    if report["error"]:
        lines.append(f"failed at stage '{report['failed_stage']}': {report['error']}")
    probe = probe_table(report)
    lines += _text_lines(report)
    lines += ["", *(probe.markdown() if probe else []), "", *accuracy_table(report).markdown(), ""]
    lines += _outputs_lines(report)
    lines += [*throughput_table(report).markdown(), machine_line(report), ""]
    lines += [*compile_table(report).markdown(), "", *hosts_table(report).markdown(), ""]
    hits = sum(1 for c in report["configs"] if c.get("compile_cache") == "hit")
    stage_seconds = sum(c.get("compile_stage_seconds") or 0 for c in report["configs"])
    lines.append(
        f"compile cache: {hits} of {len(report['configs'])} configs reused; compile stages {stage_seconds:.1f} s"
    )
    # the stage make bench times and racing shortens: the baseline's sweep and every config's
    swept = [report["baseline"] or {}, *report["configs"]]
    seconds = sum(s.get("benchmark_seconds") or 0 for s in swept)
    points = sum(len(s.get("benchmark") or []) for s in swept)
    lines.append(f"benchmark stages (baseline and every config): {seconds:.1f} s, {points} points")
    for name, why in report["skipped_targets"].items():
        lines.append(f"skipped target {name}: {why}")
    mlflow = report["mlflow"]
    if report["selected"]:
        point = report.get("selected_point") or {}
        at = f" at batch {BenchmarkPoint.model_validate(point).shape}" if point else ""
        lines.append(f"selected: {report['selected']}{at} ({report.get('selection') or 'max_throughput'})")
        lines.append(f"registered: {mlflow['registered_model']} version {mlflow['version']} (alias {mlflow['alias']})")
    if mlflow["run_id"]:
        lines.append(f"MLflow UI: {mlflow['tracking_uri']} (experiment {mlflow['experiment']}, run {mlflow['run_id']})")
    # a path on this machine (resolved), or the report's URI in the run store as it is
    lines.append(f"report: {Path(report_path).resolve() if '://' not in str(report_path) else report_path}")
    return "\n".join(lines)


def html(report: dict, plots: list[Path]) -> str:
    """The report as a standalone HTML page (templates/run_report.html.j2), with the plots embedded."""
    return render(
        "run_report.html.j2",
        report=report,
        model_lines=_model_lines(report),
        tables=[
            accuracy_table(report),
            *([outputs_table(report)] if _shows_outputs(report) else []),
            throughput_table(report),
            compile_table(report),
            hosts_table(report),
        ],  # fmt: skip
        machine=machine_line(report),
        selected=_selected_line(report),
        plots=[{"name": p.stem, "data": base64.b64encode(p.read_bytes()).decode()} for p in plots],
    )


def _log_to_mlflow(report: dict, directory: Path, settings: Settings) -> str:
    """Attach the reports to the pipeline's parent run (made here if the run failed before recording)."""
    import mlflow

    client = mlflow_client(settings)
    run_id = report["mlflow"]["run_id"]
    if run_id is None:
        experiment = mlflow.set_experiment(settings.experiment)
        run = client.create_run(experiment.experiment_id, run_name=f"failed {report['run_id']}",
                                tags={"pipeline_run_id": report["run_id"]})  # fmt: skip
        run_id = run.info.run_id
    for name in REPORT_FILES:
        client.log_artifact(run_id, str(directory / name))
    if (directory / "plots").is_dir():
        client.log_artifacts(run_id, str(directory / "plots"), artifact_path="plots")
    client.set_tag(run_id, "pipeline_status", report["status"])
    client.set_terminated(run_id, "FAILED" if report["error"] else "FINISHED")
    return run_id


REPORT_FILES = ("report.json", "report.md", "report.html")
LATEST = "latest"  # under RUN_STORE_URI: the URI of the newest report.json


def write(run_uri: str, run_id: str, settings: Settings, scratch: Path) -> tuple[str, dict | None]:
    """Write report.json, report.md, report.html and the plots (in ``scratch`` first), log them to MLflow and put
    them in the run store beside the stages' results; return (report.json's URI, the first failure)."""
    report = build(run_uri, run_id, settings)
    path = scratch / "report.json"
    write_json(path, report)
    write_atomic(scratch / "report.md", markdown(report))
    try:
        plots = plotting.write(report, scratch / "plots")
    except Exception as exc:  # a plot that cannot be drawn must not cost the run its report
        print(f"warning: could not draw the benchmark plots: {exc}", file=sys.stderr)
        plots = []
    write_atomic(scratch / "report.html", html(report, plots))
    try:
        report["mlflow"]["run_id"] = _log_to_mlflow(report, scratch, settings)
        write_json(path, report)
    except Exception as exc:  # the report in the run store stands even when MLflow is down
        print(f"warning: could not log the report to MLflow: {exc}", file=sys.stderr)
    for name in [*REPORT_FILES[1:], *(f"plots/{p.name}" for p in plots), REPORT_FILES[0]]:  # report.json last
        store.put_file(scratch / name, store.join(run_uri, name))
    uri = store.join(store.host_uri(run_uri), REPORT_FILES[0])
    store.put_bytes(uri, store.join(settings.run_store_uri, LATEST))
    failure = {"stage": report["failed_stage"], "error": report["error"]} if report["error"] else None
    return uri, failure
