"""The run report's tables, built from its data (tasks.report.build): accuracy, per output, throughput,
compile, hosts, and the probe photo's top-5, each a tasks.report.tables.Table shown as Markdown or HTML."""

from __future__ import annotations

from typing import Any

from tasks.benchmark.machine import peak_share
from tasks.core.records import Status
from tasks.core.results import BenchmarkResult, MachineContext
from tasks.report.tables import Table


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _shows_outputs(report: dict) -> bool:
    """Per-output figures are worth a table for several outputs, or any output not judged as class scores."""
    return any(
        len(c["outputs"]) > 1 or any(o.get("rule", "class scores") != "class scores" for o in c["outputs"])
        for c in report["configs"]
    )


def outputs_table(report: dict) -> Table:
    """Every output of every validated config against the baseline's."""
    table = Table(
        ["config", "output", "judged by", "lowest cosine", "max abs diff", "out of tolerance", "top-1 agreement",
         "top-1 probability shift", "top-5 set agreement", "neighbour recall@5", "similarity rank correlation"]
    )  # fmt: skip
    for c in report["configs"]:
        for check in c["outputs"]:
            # the rule that judged it (results.OUTPUT_RULES); reports before rules were named: by class_scores
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
