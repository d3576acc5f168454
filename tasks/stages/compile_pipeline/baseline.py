"""Task ``baseline`` (one per host class that has configs): the source framework itself on the CPU of that class's
hosts, the reference its configs are judged against and the throughput their speedups divide by."""

from __future__ import annotations

from tasks.benchmark import host_lock
from tasks.benchmark.harness import benchmark_baseline, harness_for, machine_context
from tasks.core import store
from tasks.core.figures import fmt
from tasks.core.records import DatasetRef, ExportedModel, RunContext
from tasks.core.results import BaselineResult
from tasks.stages.runner import points_said, progress, stage
from tasks.validation.predictions import baseline_predictions, publish_outputs


@stage("baseline", key=lambda host_class, **_: host_class)
def run(ctx: RunContext, exported: ExportedModel, dataset: DatasetRef, host_class: str) -> BaselineResult:
    with host_lock.beside_others():
        predictions = baseline_predictions(exported, dataset, ctx.scratch("outputs", host_class))
    predictions = publish_outputs(predictions, store.join(ctx.run_uri, "outputs", f"baseline-{host_class}.outputs.npz"))
    with host_lock.sweep() as waited:
        machine = machine_context()  # measured (once per host) with no sweep of ours on the cores
        said = points_said("baseline", f"{exported.framework} on {host_class}")
        benchmark = benchmark_baseline(exported, dataset, ctx.params.batch_sizes, harness_for(ctx.params), said)
    result = BaselineResult(
        framework=exported.framework,
        predictions=predictions,
        benchmark=benchmark.model_copy(update={"machine": machine, "waited_s": round(waited, 1)}),
        host_class=host_class,
    )
    progress(
        "baseline",
        f"{exported.framework} on the CPU of a {host_class} host ({result.benchmark.machine.host}): "
        f"top-1 {fmt(result.predictions.top1, missing='n/a')}, top-5 {fmt(result.predictions.top5, missing='n/a')}, "
        f"best {result.benchmark.best.summary}",
    )
    return result
