"""The run report's tables, built from its data (tasks.report.build): accuracy, per output, throughput,
compile, hosts, and the probe photo's top-5, each a tasks.report.tables.Table shown as Markdown or HTML."""

from __future__ import annotations

from tasks.benchmark.machine import peak_share
from tasks.core.figures import FIGURES, LABELLED, fmt
from tasks.core.records import Status
from tasks.core.results import BenchmarkResult
from tasks.report.records import RunReport
from tasks.report.tables import Table


def shows_outputs(report: RunReport) -> bool:
    """Per-output figures are worth a table for several outputs, or any output not judged as class scores."""
    return any(len(c.outputs) > 1 or any(o.rule != "class scores" for o in c.outputs) for c in report.configs)


def outputs_table(report: RunReport) -> Table:
    """Every output of every validated config against the baseline's."""
    shown = [f for f in FIGURES if "outputs" in f.report]
    table = Table(["config", "output", "judged by", *(f.label for f in shown)])
    for c in report.configs:
        for check in c.outputs:
            judged = check.rule + (" (constant output)" if check.constant else "")
            table.rows.append([c.key, check.name, judged, *(f.with_interval(check) for f in shown)])
    return table


def accuracy_table(report: RunReport) -> Table:
    """Accuracy against the labels, and each config's figures of its primary output against the baseline's."""
    baseline, labelled = report.baseline, report.labelled
    missing = "-" if labelled else "n/a"  # no labels: no accuracy to show
    shown = [f for f in FIGURES if "accuracy" in f.report]
    table = Table(["config", "top-1", "top-5", *(f.label for f in shown), "gate"])
    if baseline:
        top = [fmt(baseline.top1, missing=missing), fmt(baseline.top5, missing=missing)]
        table.rows.append([f"CPU baseline ({baseline.framework})", *top] + [""] * (len(shown) + 1))
    for c in report.configs:
        reasons = f" ({'; '.join(c.gate_reasons)})" if c.gate_reasons else ""
        fewer = baseline and c.samples and c.samples != baseline.samples
        figures = [f.with_interval(c.primary, missing if f.rows == LABELLED else "-") for f in shown]
        table.rows.append(
            [
                c.key + (f" ({c.samples} samples fit {c.sequence_length} tokens)" if fewer else ""),
                fmt(c.top1, missing=missing),
                fmt(c.top5, missing=missing),
                *figures,
                f"{c.gate}{reasons}",
            ]
        )
    return table


def hosts_table(report: RunReport) -> Table:
    """Where each config's figures came from: its host class, and the workers that compiled, validated and
    benchmarked it and measured the CPU baseline its speedup divides by."""
    table = Table(["config", "host class", "compiled on", "validated on", "benchmarked on", "baseline on"])
    for c in report.configs:
        hosts = [c.hosts.get(k) or "-" for k in ("compiled", "validated", "benchmarked", "baseline")]
        table.rows.append([c.key, c.host_class, *hosts])
    return table


def compile_table(report: RunReport) -> Table:
    """Per config: compiler and flags, operators on the device, seconds, peak memory, cache use, NEFFs, and the
    compiler's notes (e.g. which layers int8 left in float)."""
    table = Table(
        ["config", "compiler", "flags", "ops on device", "compile s", "stage s", "peak MiB", "cache", "device binaries",
         "notes"]
    )  # fmt: skip
    for c in report.configs:
        r = c.compile_report
        ops = "-"
        if r and r.operators_total:
            ops = f"{r.operators_on_device}/{r.operators_total} on {r.device or '?'}"
        table.rows.append(
            [
                c.key,
                f"{c.compiler or '-'} {c.compiler_version}",
                " ".join(r.flags if r else []) or "-",
                ops,
                fmt(c.compile_seconds, ".1f"),
                fmt(c.compile_stage_seconds, ".1f"),
                fmt(c.compile_peak_memory_mb, ".0f"),
                c.compile_cache,
                str(len(r.device_binaries if r else [])),
                "; ".join(r.notes if r else []) or "-",
            ]
        )
    return table


def throughput_table(report: RunReport) -> Table:
    """Per subject: the best point of its sweep, against single-stream batch 1, the best CPU baseline
    and the machine's matmul peak; unstable points and idle devices show here."""
    baselines = report.baselines or ({"cpu": report.baseline} if report.baseline else {})
    several = len(baselines) > 1  # each host class's rows name it, beside its own baseline
    subjects = []
    for host_class, base in baselines.items():
        name = f"CPU baseline ({host_class} hosts)" if several else "CPU baseline"
        subjects.append((name, "fp32", base.benchmark, base.throughput))
        subjects += [
            (f"{c.key} ({host_class} hosts)" if several else c.key, c.precision, c.benchmark, base.throughput)
            for c in report.configs
            if c.host_class == host_class
        ]
    subjects += [(c.key, c.precision, c.benchmark, None) for c in report.configs if c.host_class not in baselines]
    flops = report.model.flops_per_sample if report.model else None
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
        share = report.machine and peak_share(best.throughput, flops, precision, report.machine)
        stable = "" if best.stable else " (unstable)"
        table.rows.append(
            [
                name,
                f"{best.throughput:.1f} at {best.shape}{stable}",
                f"{best.latency_ms_p50:.1f} / {best.latency_ms_p99:.1f}",
                fmt(naive and naive.throughput, ".1f"),
                f"{fmt(naive and best.throughput / naive.throughput, '.2f')}x",
                f"{fmt(base_best and best.throughput / base_best, '.2f')}x",
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


def probe_table(report: RunReport) -> Table | None:
    """The probe photo's top-5 from the CPU model and each compiled config, side by side."""
    columns = []
    if report.baseline and report.baseline.probe_top5:  # none on data without class names
        columns.append(("CPU baseline", report.baseline.probe_top5))
    columns += [(c.key, c.probe_top5) for c in report.configs if c.probe_top5]
    if not columns:
        return None
    photo = (report.dataset.probe if report.dataset else "") or "probe"
    table = Table(["rank", *(n for n, _ in columns)], caption=f"Top-5 classes of {photo}:")
    for rank in range(5):
        cells = [f"{top[rank].name} {top[rank].probability:.3f}" if rank < len(top) else "" for _, top in columns]
        table.rows.append([str(rank + 1), *cells])
    return table
