"""Benchmark plots for the run report: throughput over batch size, latency percentiles over streams."""

from __future__ import annotations

import io
from pathlib import Path

from tasks.core.files import write_atomic
from tasks.core.results import BenchmarkPoint
from tasks.report.records import RunReport

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): matplotlib.

THROUGHPUT_PNG = "throughput_vs_batch.png"
LATENCY_PNG = "latency_vs_concurrency.png"


def _subjects(report: RunReport) -> list[tuple[str, list[BenchmarkPoint]]]:
    baseline = report.baseline
    subjects = [("CPU baseline", baseline.benchmark)] if baseline and baseline.benchmark else []
    return subjects + [(c.key, c.benchmark) for c in report.configs if c.benchmark]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())  # never a half-written PNG


def _real_ticks(ax, values: set[int]) -> None:
    """A log axis labelled with the values measured (1, 4, 8), not powers of its base."""
    from matplotlib.ticker import NullLocator

    ax.set_xticks(sorted(values), [str(v) for v in sorted(values)])
    ax.xaxis.set_minor_locator(NullLocator())


def write(report: RunReport, out_dir: str | Path) -> list[Path]:
    """PNG plots of the report's benchmark points; [] where nothing was measured."""
    import matplotlib

    matplotlib.use("Agg")  # no display on workers
    import matplotlib.pyplot as plt

    subjects = _subjects(report)
    if not subjects:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, points in subjects:
        single = sorted((p for p in points if p.concurrency == 1), key=lambda p: p.batch_size)
        if single:
            ax.plot([p.batch_size for p in single], [p.throughput for p in single], marker="o", label=name)
    ax.set(xscale="log", xlabel="batch size (one stream)", ylabel="samples/s", title="Throughput vs batch size")
    _real_ticks(ax, {p.batch_size for _, points in subjects for p in points})
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / THROUGHPUT_PNG))

    fig, ax = plt.subplots(figsize=(8, 5))
    for index, (name, points) in enumerate(subjects):
        best = max(points, key=lambda p: p.throughput)
        at_batch = sorted((p for p in points if p.batch_size == best.batch_size), key=lambda p: p.concurrency)
        streams = [p.concurrency for p in at_batch]
        colour = f"C{index % 10}"
        ax.plot(streams, [p.latency_ms_p50 for p in at_batch], color=colour, marker="o", label=f"{name} p50")
        ax.plot(streams, [p.latency_ms_p90 for p in at_batch], color=colour, linestyle=":", alpha=0.7)
        ax.plot(streams, [p.latency_ms_p99 for p in at_batch], color=colour, linestyle="--", label=f"{name} p99")
    ax.set(xlabel="concurrent streams (at each subject's best batch size)", ylabel="ms per request",
           title="Latency percentiles vs concurrency (solid p50, dotted p90, dashed p99)")  # fmt: skip
    ax.set_xscale("log")
    _real_ticks(ax, {p.concurrency for _, points in subjects for p in points})
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths.append(_save(fig, out_dir / LATENCY_PNG))
    return paths
