"""``make bench``: the benchmark harness on MobileNetV2, ResNet-50 and all-MiniLM-L6-v2, every available target and
precision.

Per model it prints the machine (CPU, cores, measured matmul peak), the model's FLOPs per
sample, and per config: the gate, the harness's best point, samples/s, speedup over the
best CPU-baseline point, tuned over naive single-stream, spread of the final windows and
the share of the machine's peak. Each config also gets a referee measured in the same run:
for OpenVINO, the runtime's own ``benchmark_app -hint throughput`` on the same IR, batch and
precision; for ONNX Runtime, a plain session at its defaults driven by the harness at the same
batch and streams. Then it runs an exhaustive sweep of the same grid for the selected config
and says how far the harness's pick is from that sweep's best. Figures, not assertions: this
machine is shared and noisy, so compare ratios within one run.

    python -m devtools.bench [--models mobilenet_v2,resnet50] [--window 1.0]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks import targets
from tasks.benchmark import machine as machines
from tasks.benchmark.harness import benchmark_artifact, benchmark_baseline, stream_loader_for
from tasks.benchmark.streams import ThreadStreams
from tasks.benchmark.sweep import Sweep
from tasks.benchmark.windows import Harness, measure_streams
from tasks.core import settings as settings_module
from tasks.core.figures import fmt
from tasks.core.files import local_path, write_atomic, write_json
from tasks.core.params import PipelineParams
from tasks.core.records import CompiledArtifact, DatasetRef, ExportedModel
from tasks.core.results import BaselineResult, BenchmarkPoint
from tasks.core.settings import PROJECT_ROOT
from tasks.datasets import prepare as datasets
from tasks.sources.export import export_model
from tasks.stages.compile_pipeline.compile_config import compile_here
from tasks.stages.compile_pipeline.gate import gate_all, select
from tasks.stages.compile_pipeline.plan import plan_configs
from tasks.targets import onnxruntime_cpu, openvino_cpu  # their file names and precision hints, for the referees
from tasks.validation.predictions import baseline_predictions, validate_artifact

MODELS = {
    "mobilenet_v2": (PipelineParams(model_name="mobilenet_v2"), [1, 2, 4, 8, 16, 32]),
    # ResNet-50, the model of Neuron's tutorials, with seeded random weights (none ship here)
    "resnet50": (PipelineParams(model_name="resnet50", model_uri="builtin:resnet50_random"), [1, 2, 4, 8, 16]),
    # a transformer at the static sequence length the pipeline compiles it for (the model's own, 256 tokens)
    "all_minilm_l6_v2": (
        PipelineParams(
            model_name="all-minilm-l6-v2",
            model_uri="builtin:all_minilm_l6_v2",
            framework="huggingface",
            dataset="builtin:sentences",
        ),
        [1, 2, 4, 8],
    ),
}
GRID_STREAMS = [1, 2, 4]
# The exhaustive grid is measured as a careful engineer would by hand: longer windows, every point in full
CAREFUL = Harness(window_s=1.0, race_windows=0)


def _point(p: BenchmarkPoint) -> str:
    return p.shape.replace(" streams", "") + ("" if p.stable else " unstable")


REFEREE_SECONDS = 10


def openvino_referee(artifact, exported, batch_size: int) -> tuple[float | None, str]:
    """``benchmark_app -hint throughput`` on the config's IR at ``batch_size``: (samples/s, how it was run)."""
    dims = {spec.name: [batch_size if i == spec.batch_axis else d for i, d in enumerate(spec.shape)]
            for spec in exported.inputs}  # fmt: skip
    if any(isinstance(d, str) for shape in dims.values() for d in shape):
        return None, "benchmark_app needs static shapes beside the batch axis"
    shapes = ",".join(f"{name}[{','.join(map(str, shape))}]" for name, shape in dims.items())
    # Each input's layout names its batch axis: without it benchmark_app guesses one for images only, and counts a
    # batch of token ids as one sample (its FPS was half the harness's at batch 2)
    layouts = ",".join(f"{spec.name}[{''.join('N' if i == spec.batch_axis else '?' for i in range(len(spec.shape)))}]"
                       for spec in exported.inputs)  # fmt: skip
    command = [str(Path(sys.executable).parent / "benchmark_app"), "-m", str(local_path(artifact.uri) / openvino_cpu.MODEL_FILE),
               "-d", "CPU", "-hint", "throughput", "-shape", shapes, "-layout", layouts, "-t", str(REFEREE_SECONDS),
               "-infer_precision", openvino_cpu.PRECISION_HINTS[artifact.config.precision]]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    # its throughput counts samples (iterations x batch) per second
    found = re.search(r"Throughput:\s+([\d.]+)\s+FPS", done.stdout)
    how = f"benchmark_app -hint throughput, batch {batch_size}"
    return (float(found.group(1)), how) if found else (None, f"{how} failed: {(done.stdout + done.stderr)[-200:]}")


def onnxruntime_referee(artifact, inputs: dict[str, np.ndarray], point: BenchmarkPoint, harness: Harness):
    """A plain ONNX Runtime session at its defaults, one per stream, at the harness's best batch and streams."""
    import onnxruntime as ort

    batch = {k: np.ascontiguousarray(np.resize(v, (point.batch_size, *v.shape[1:]))) for k, v in inputs.items()}

    def plain():
        session = ort.InferenceSession(str(local_path(artifact.uri) / onnxruntime_cpu.MODEL_FILE))
        return lambda feed: session.run(None, feed)

    measured = measure_streams(ThreadStreams([plain() for _ in range(point.concurrency)], batch), point.batch_size,
                               harness)  # fmt: skip
    return measured.throughput, f"default session, batch {point.batch_size} x {point.concurrency} streams"


def referee(artifact, exported, inputs, point: BenchmarkPoint, harness: Harness) -> tuple[float | None, str]:
    if artifact.config.target == "openvino":
        return openvino_referee(artifact, exported, point.batch_size)
    if artifact.config.target == "onnxruntime":
        return onnxruntime_referee(artifact, inputs, point, harness)
    return None, ""


REFEREE_ROUNDS = 3


def paired_referee(artifact, exported, inputs, point: BenchmarkPoint | None, harness: Harness):
    """The harness at its pick and the referee in turns, ``REFEREE_ROUNDS`` each, so that their ratio is the
    harness's against the referee's, not the machine's drift between the sweep and the referee (a shared machine's
    figures drift within minutes): (harness's median, referee's median, how the referee ran)."""
    if point is None or artifact.config.target not in ("openvino", "onnxruntime"):
        return None, None, ""
    target = targets.get(artifact.config.target)
    sweep = Sweep(
        lambda bs: target.load(artifact, bs), inputs, harness, stream_loader=stream_loader_for(target, artifact)
    )
    how = ""

    def judged() -> float | None:
        nonlocal how
        figure, how = referee(artifact, exported, inputs, point, harness)
        return figure

    ours, theirs = in_turns(lambda: _again(sweep, point), judged)
    return ours, theirs, how


def _again(sweep: Sweep, point: BenchmarkPoint) -> float | None:
    """``point`` measured again in full (no best to race); None where it failed this time."""
    again = sweep.point(point.batch_size, point.concurrency)
    return again.throughput if again is not None else None


def in_turns(first: Callable[[], float | None], second: Callable[[], float | None]) -> tuple[float | None, ...]:
    """Two measurements taken in turns, ``REFEREE_ROUNDS`` each: their medians (None where every try failed), so
    that they compare the two, not the machine's drift between them (a shared machine's figures drift)."""
    figures: tuple[list[float], list[float]] = ([], [])
    for _ in range(REFEREE_ROUNDS):
        for measure, measured in zip((first, second), figures, strict=True):
            figure = measure()
            if figure is not None:
                measured.append(figure)
    return tuple(float(np.median(f)) if f else None for f in figures)


@dataclass
class Prepared:
    """One model made ready to benchmark, as the pipeline's stages before the benchmark make it."""

    params: PipelineParams
    batches: list[int]
    exported: ExportedModel
    ref: DatasetRef
    artifacts: list[CompiledArtifact]
    skipped: dict[str, str]


def prepare_model(name: str, out: Path) -> Prepared:
    """Export, dataset and every planned config compiled, as the pipeline's stages do."""
    params, batches = MODELS[name]
    exported = export_model(params, out / "export")
    ref = datasets.prepare(params.dataset, out / "dataset", exported, params.calibration_samples)
    configs, skipped = plan_configs(params, exported)
    # the compile stage's own code, so that bench measures the artifacts the pipeline would register
    artifacts = [compile_here(exported, ref, c, out / "compiled", params) for c in configs]
    return Prepared(params, batches, exported, ref, artifacts, skipped)


def bench_model(name: str, out: Path, harness: Harness, machine, log=print) -> dict:
    started = time.monotonic()
    prepared = prepare_model(name, out)
    params, batches, exported, ref = prepared.params, prepared.batches, prepared.exported, prepared.ref
    artifacts, skipped = prepared.artifacts, prepared.skipped
    predictions = baseline_predictions(exported, ref, out / "outputs")
    stage_started = time.monotonic()  # the pipeline's baseline benchmark and benchmark tasks, one after another
    baseline = BaselineResult(
        framework=exported.framework,
        predictions=predictions,
        benchmark=benchmark_baseline(exported, ref, batches, harness),
    )
    benchmarks = {}
    for artifact in artifacts:
        measured = benchmarks[artifact.config.key] = benchmark_artifact(artifact, ref, batches, harness)
        log(f"  measured {artifact.config.key}: {measured.seconds:.0f} s, {len(measured.points)} points")
    stage_s = time.monotonic() - stage_started
    points = sum(len(b.points) for b in [baseline.benchmark, *benchmarks.values()])
    early = sum(p.stopped_early for b in [baseline.benchmark, *benchmarks.values()] for p in b.points)
    validations = {a.config.key: validate_artifact(a, ref, baseline, out / "outputs") for a in artifacts}
    outcomes = gate_all(artifacts, validations, benchmarks, params, out / "gate")
    base_best = baseline.benchmark.best
    inputs = datasets.load(ref).inputs(0, max(batches))
    referees = {}
    for artifact in artifacts:
        referees[artifact.config.key] = paired_referee(
            artifact, exported, inputs, benchmarks[artifact.config.key].best, harness
        )

    log(f"\n== {name}: {exported.parameters:,} parameters, {exported.flops_per_sample / 1e9:.2f} GFLOPs per sample")
    log("| config | gate | best point (batch x streams) | runtime mode | samples/s | harness beside referee "
        "| referee samples/s | harness / referee | p99 ms | speedup vs best CPU | tuned / naive | spread | % of peak "
        "| utilisation |")  # fmt: skip
    log("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = [("CPU baseline", "fp32", "-", baseline.benchmark)] + [
        (o.compiled.config.key, o.compiled.config.precision, o.gate, o.benchmark) for o in outcomes
    ]
    table = []
    for key, precision, gate, bench in rows:
        best, naive = bench.best, bench.naive
        if best is None:
            log(f"| {key} | {gate} | failed: {bench.reason[:80]} | | | | | | | | | | | |")
            continue
        beside, judged, how = referees.get(key, (None, None, ""))
        share = machines.peak_share(best.throughput, exported.flops_per_sample, precision, machine)
        row = {
            "config": key,
            "gate": gate,
            "best": best.to_json(),
            "speedup_vs_cpu": best.throughput / base_best.throughput,
            "tuned_over_naive": best.throughput / naive.throughput if naive else None,
            "peak_share": share,
            "referee": {"throughput": judged, "how": how, "harness_beside": beside, "rounds": REFEREE_ROUNDS},
            "harness_over_referee": beside / judged if beside and judged else None,
            "sweep": {"seconds": bench.seconds, "points": [p.to_json() for p in bench.points]},
        }
        table.append(row)
        mode = " ".join(f"{k}={v}" for k, v in best.runtime.items() if k != "OPTIMAL_NUMBER_OF_INFER_REQUESTS") or "-"
        log(f"| {key} | {gate} | {_point(best)} | {mode} | {best.throughput:.1f} | {fmt(beside, '.1f')} | {fmt(judged, '.1f')} "
            f"| {fmt(row['harness_over_referee'], '.2f')} | {best.latency_ms_p99:.1f} "
            f"| {row['speedup_vs_cpu']:.2f}x | {fmt(row['tuned_over_naive'], '.2f')}x | {best.spread:.1%} "
            f"| {fmt(share and 100 * share, '.1f')} | {' '.join(f'{u:.0f}' for u in best.utilisation)} |")  # fmt: skip
    for key, (_, _, how) in referees.items():
        if how:
            log(f"referee of {key}: {how}; in turns with the harness at its pick, {REFEREE_ROUNDS} rounds, medians")
    for key, why in skipped.items():
        log(f"skipped {key}: {why}")

    result = {"model": name, "flops_per_sample": exported.flops_per_sample, "configs": table}
    choice = select(outcomes)
    if choice:
        selected, point = choice
        artifact = selected.compiled
        target = targets.get(artifact.config.target)
        grid_batches = [artifact.config.batch_size] if artifact.config.batch_size else batches
        sweep = Sweep(
            lambda bs: target.load(artifact, bs), inputs, CAREFUL, stream_loader=stream_loader_for(target, artifact)
        )
        sweep.grid(grid_batches, GRID_STREAMS)
        grid_points = list(sweep.points)
        grid_best = max(grid_points, key=lambda p: p.throughput)
        gap = point.throughput / grid_best.throughput - 1
        # whether the harness picked the right point, whatever the machine did between the sweep and the grid: the
        # pick and the grid's best measured again, in turns
        on_grid = any((p.batch_size, p.concurrency) == (point.batch_size, point.concurrency) for p in grid_points)
        if (point.batch_size, point.concurrency) == (grid_best.batch_size, grid_best.concurrency):
            turns = None
            said = "the pick is the grid's best"
        else:
            turns = in_turns(lambda: _again(sweep, point), lambda: _again(sweep, grid_best))
            turns = turns if None not in turns else None
            said = "the pick and the grid's best could not be measured again"
        if turns:
            said = (f"in turns ({REFEREE_ROUNDS} rounds, medians): the pick {turns[0]:.1f}, the grid's best "
                    f"{turns[1]:.1f}, pick / best = {turns[0] / turns[1] - 1:+.1%}"
                    + ("" if on_grid else " (the pick is off the grid)"))  # fmt: skip
        log(f"selected {artifact.config.key} at {_point(point)}: {point.throughput:.1f} samples/s; exhaustive sweep "
            f"of {len(grid_batches)} batch sizes x {GRID_STREAMS} streams (windows of {CAREFUL.window_s:.0f} s, "
            f"every point in full): best {_point(grid_best)} {grid_best.throughput:.1f}; harness pick / exhaustive "
            f"best = {gap:+.1%}; {said}")  # fmt: skip
        result["selected"] = {"config": artifact.config.key, "point": point.to_json()}
        result["exhaustive"] = {
            "best": grid_best.to_json(),
            "gap": gap,
            "in_turns": {"pick": turns[0], "grid_best": turns[1]} if turns else None,
            "harness": {"window_s": CAREFUL.window_s, "race_windows": CAREFUL.race_windows},
            "points": [p.to_json() for p in grid_points],
        }
    log(f"benchmarks (baseline and every config, as the pipeline's tasks run them): {stage_s:.0f} s, {points} points, "
        f"{early} of them stopped early under the best")  # fmt: skip
    result["benchmark_stage_s"] = round(stage_s, 1)
    log(f"({name} took {time.monotonic() - started:.0f} s)")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--window", type=float, default=PipelineParams().benchmark_window_s, help="the harness's window, seconds"
    )
    parser.add_argument(
        "--no-race", action="store_true", help="measure every point in full (the harness before racing)"
    )
    args = parser.parse_args(argv)
    settings = settings_module.load()
    out = settings.home / "bench" / time.strftime("%Y%m%dT%H%M%S")
    machine = machines.context(settings.home / "machine", refresh=True)
    lines: list[str] = []

    def log(line: str = "") -> None:  # printed, and kept for docs/benchmarks.md
        print(line, flush=True)
        lines.append(line)

    log(f"machine: {machine.cpu_model}, {machine.cores_physical} cores ({machine.cores_logical} threads), "
        f"measured matmul peak GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in machine.peak_gflops.items()))  # fmt: skip
    harness = Harness(window_s=args.window, race_windows=0 if args.no_race else Harness.race_windows)
    results = [bench_model(name, out / name, harness, machine, log) for name in args.models.split(",")]
    measured_at = time.strftime("%Y-%m-%d %H:%M %Z")
    write_json(out / "bench.json", {"machine": machine.to_json(), "measured_at": measured_at, "results": results})
    title = f"### `make bench`, {args.models.replace(',', ', ')}, {machine.cpu_model} ({machine.cores_physical} cores), {measured_at}"
    write_atomic(out / "bench.md", "\n".join([title, "", *lines, ""]))
    add_to_figures(BENCHMARKS_DOC, title, lines)
    print(f"\nfigures: {out / 'bench.json'}, {out / 'bench.md'}; added to {BENCHMARKS_DOC}")
    return 0


BENCHMARKS_DOC = PROJECT_ROOT / "docs" / "benchmarks.md"
FIGURES_HEADING = "## Figures"


def add_to_figures(doc: Path, title: str, lines: list[str]) -> None:
    """This run's figures at the top of the doc's Figures section, newest first, under a title naming the machine
    and the date."""
    text = doc.read_text() if doc.is_file() else f"# Benchmarks\n\n{FIGURES_HEADING}\n"
    if FIGURES_HEADING not in text:
        text = text.rstrip() + f"\n\n{FIGURES_HEADING}\n"
    head, tail = text.split(FIGURES_HEADING, 1)
    block = "\n".join([title, "", *lines, ""])
    write_atomic(doc, f"{head}{FIGURES_HEADING}\n\n{block}\n{tail.lstrip(chr(10))}")


if __name__ == "__main__":
    raise SystemExit(main())
