"""Task ``plan``: which configs to compile, from the user's targets, precisions and batch sizes, grouped by the
host class each runs on.

Runs on the compile fleet (queue ``targets.PLAN_QUEUE``): whether a target compiled there can compile is judged
there. On a fleet (``HOST_CLASSES`` set) a target of a host class the deployment has no workers for is skipped with
that reason, and one compiled on another queue (TensorRT on the GPU hosts) is judged by its own compile task.
"""

from __future__ import annotations

from tasks import sources, targets
from tasks.core import settings as settings_module
from tasks.core.batching import is_token_input
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, ExportedModel, Outcome, Plan, RunContext, Status
from tasks.stages.runner import progress, stage

KNOWN_PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def check_params(params: PipelineParams) -> None:
    """Refuse unknown targets and precisions before any work starts."""
    unknown = [t for t in params.targets if t not in targets.names()]
    if unknown:
        raise ValueError(f"unknown target(s) {unknown}; known targets: {', '.join(targets.names())}")
    if params.framework not in sources.names():
        raise ValueError(f"unknown framework {params.framework!r}; known frameworks: {', '.join(sources.names())}")
    bad = [p for p in params.precisions if p not in KNOWN_PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision(s) {bad}; known precisions: {', '.join(KNOWN_PRECISIONS)}")


def plan_configs(
    params: PipelineParams, exported: ExportedModel | None = None
) -> tuple[list[CompileConfig], dict[str, str]]:
    """Configs to compile, and the targets (or a target's precision) skipped with their reason: an SDK that is
    not installed, a model format the target cannot read, a precision this machine has no instructions for."""
    check_params(params)
    if exported is not None and params.sequence_buckets and not any(map(is_token_input, exported.inputs)):
        raise ValueError(
            f"sequence_buckets {params.sequence_buckets} are lengths of token inputs, and model "
            f"{exported.name} takes none ({', '.join(f'{s.name} {s.shape}' for s in exported.inputs)})"
        )
    tokens = [s.shape[1] for s in (exported.inputs if exported else []) if is_token_input(s)]
    if params.sequence_length is None and tokens and isinstance(tokens[0], int):
        # the length the export took from the model itself: the longest bucket, as a length given would be
        params = PipelineParams.model_validate({**params.model_dump(), "sequence_length": tokens[0]})
    configs: list[CompileConfig] = []
    skipped: dict[str, str] = {}
    fleet = settings_module.load().host_classes  # empty: this machine runs every task itself
    for name in params.targets:
        target = targets.get(name)
        if fleet and target.run_queue not in fleet:
            skipped[name] = (
                f"this deployment has no {target.run_queue} hosts (HOST_CLASSES={','.join(fleet)}); "
                f"{name} runs on host class {target.run_queue}"
            )
            continue
        ok, why = (True, "") if fleet and target.compile_queue != targets.PLAN_QUEUE else target.available()
        if not ok:
            skipped[name] = why
            continue
        precisions = [p for p in params.precisions if p in target.precisions]
        if not precisions:
            skipped[name] = f"supports none of {params.precisions} (only {', '.join(target.precisions)})"
            continue
        if exported is not None:
            why_not = target.accepts(exported)
            if why_not:
                skipped[name] = why_not
                continue
        for precision in precisions:
            missing = target.precision_missing(precision)
            if missing:
                skipped[f"{name}-{precision}"] = missing
                continue
            configs += target.configs(precision, params)
    if not configs:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise ValueError(f"no compile config can run here: {reasons}")
    return configs, skipped


def for_host_class(plan: dict, host_class: str) -> list[dict]:
    """The planned configs that run on ``host_class`` (a target's run queue), as the DAG maps them."""
    return [c.to_json() for c in Plan.model_validate(plan).configs if targets.get(c.target).run_queue == host_class]


@stage("plan")
def run(ctx: RunContext, exported: ExportedModel) -> Plan:
    configs, skipped = plan_configs(ctx.params, exported)
    progress(
        "plan",
        f"{len(configs)} configs: {', '.join(c.key for c in configs)}"
        + "".join(f"; skipped {k}: {v}" for k, v in skipped.items()),
    )
    return Plan(
        configs=configs,
        skipped=[Outcome(subject=name, status=Status.SKIPPED, reason=why) for name, why in skipped.items()],
    )
