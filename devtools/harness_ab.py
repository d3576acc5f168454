"""``python -m devtools.harness_ab --rev REV``: the benchmark stage with the harness of another git revision beside
today's, on the same model and the same compiled configs, in turns (then, now, now, then, ...).

The pipeline's benchmark stage as the demo runs it (the CPU baseline and every config, one after another, the
default params' batch sizes, each harness with its own defaults) is run once per round with each harness; the
table gives each subject's seconds, points and best samples/s per harness, medians over the
rounds. What differs between the two is the harness alone (the single ``tasks/benchmark/harness.py`` as it was at
REV, against today's harness, windows, streams and sweep modules of tasks.benchmark): targets, runtimes and artifacts
are today's, so a harness of before the throughput modes drives each target through ``load`` (one predictor per
stream), as it did then. A REV whose harness is already split into those modules is refused (its harness.py would
run on today's windows). Figures, not assertions: compare within one run.

    python -m devtools.harness_ab --rev a210395 [--model mobilenet_v2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from types import ModuleType, SimpleNamespace

from devtools.bench import MODELS, Prepared, prepare_model
from tasks.benchmark import harness as harness_now
from tasks.benchmark import windows
from tasks.core import settings as settings_module
from tasks.core.files import write_json

REPO = Path(__file__).resolve().parent.parent


def harness_at(rev: str) -> ModuleType:
    """``tasks/benchmark/harness.py`` as it was at ``rev``, imported under its own module name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:tasks/benchmark/harness.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    module = harness_from(source, f"harness_at_{rev}")
    if module.Harness.__module__ != module.__name__:  # a split harness's settings come from today's modules
        raise SystemExit(
            f"{rev}'s harness.py takes its Harness from {module.Harness.__module__}: not a single-file harness"
        )
    return module


def harness_from(source: str, name: str) -> ModuleType:
    """A harness module's ``source`` imported as module ``name``, beside today's modules of tasks.benchmark."""
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def harness_today() -> SimpleNamespace:
    """Today's harness as ``run_stage`` calls one: its settings (tasks.benchmark.windows) and its entry points
    (tasks.benchmark.harness), which an old revision's single harness.py held together."""
    return SimpleNamespace(
        Harness=windows.Harness,
        benchmark_baseline=harness_now.benchmark_baseline,
        benchmark_artifact=harness_now.benchmark_artifact,
    )


def run_stage(harness: ModuleType | SimpleNamespace, prepared: Prepared, log=print) -> dict[str, dict]:
    """The baseline and every compiled config, one after another, timed here (older harnesses do not time).

    Each harness with its own defaults, which are the pipeline's defaults of its day (window, racing, streams)."""
    settings, batches = harness.Harness(), prepared.params.batch_sizes  # the pipeline's (the demo's) batch sizes
    subjects = {}
    jobs = [("baseline", lambda: harness.benchmark_baseline(prepared.exported, prepared.ref, batches, settings))]
    jobs += [
        (a.config.key, lambda a=a: harness.benchmark_artifact(a, prepared.ref, batches, settings))
        for a in prepared.artifacts
    ]
    for key, job in jobs:
        started = time.monotonic()
        result = job()
        best = result.best
        subjects[key] = {
            "seconds": round(time.monotonic() - started, 1),
            "points": len(result.points),
            "best": best.throughput if best else None,
            "at": f"{best.batch_size} x {best.concurrency}" if best else result.reason[:80],
        }
        log(f"    {key}: {subjects[key]['seconds']:.0f} s, {subjects[key]['points']} points, best {subjects[key]['at']}"
            f" {subjects[key]['best']}")  # fmt: skip
    return subjects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rev", required=True, help="the git revision whose harness is compared with today's")
    parser.add_argument("--model", default="mobilenet_v2", choices=sorted(MODELS))
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both harnesses, alternating who goes first")
    args = parser.parse_args(argv)
    out = settings_module.load().home / "bench" / f"ab-{time.strftime('%Y%m%dT%H%M%S')}"
    prepared = prepare_model(args.model, out / args.model)
    harnesses = {f"then ({args.rev})": harness_at(args.rev), "now": harness_today()}
    runs: dict[str, list[dict]] = {name: [] for name in harnesses}
    for round_ in range(args.rounds):
        order = list(harnesses) if round_ % 2 == 0 else list(reversed(harnesses))
        for name in order:
            print(f"round {round_ + 1}, harness {name}:", flush=True)
            started = time.monotonic()
            subjects = run_stage(harnesses[name], prepared)
            runs[name].append({"stage_s": round(time.monotonic() - started, 1), "subjects": subjects})
            print(f"  stage: {runs[name][-1]['stage_s']:.0f} s", flush=True)

    then, now = list(harnesses)
    print(f"\n== {args.model}: benchmark stage, medians over {args.rounds} rounds")
    print(f"| subject | {then} s | now s | {then} points | now points | {then} best samples/s | now best samples/s |")
    print("|---|---|---|---|---|---|---|")
    for key in runs[now][0]["subjects"]:
        cells = []
        for field in ("seconds", "points", "best"):
            for name in (then, now):
                values = [r["subjects"][key][field] for r in runs[name] if r["subjects"][key][field] is not None]
                cells.append(f"{median(values):.1f}" if values else "-")
        print(f"| {key} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | {cells[5]} |")
    stage = {name: median(r["stage_s"] for r in runs[name]) for name in harnesses}
    print(f"stage: {then} {stage[then]:.0f} s, now {stage[now]:.0f} s (each round: "
          f"{[r['stage_s'] for r in runs[then]]} / {[r['stage_s'] for r in runs[now]]}); "
          f"now / then = {stage[now] / stage[then]:.2f}")  # fmt: skip
    write_json(out / "harness_ab.json", {"model": args.model, "rev": args.rev, "runs": runs})
    print(f"figures: {out / 'harness_ab.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
