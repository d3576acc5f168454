"""Task ``gate``: a Great Expectations suite over the per-config metrics table decides what may be registered.

One row per output of each config that compiled and validated: a config fails on any of its outputs. Each expectation carries the DAG param
its threshold comes from, so a failing config's reason names the expectation, the
observed value and the threshold. The suite's validation result (JSON) and its Data Docs
(HTML) are put in the run store under ``<run>/gate/`` and logged to MLflow by the record stage.
A config whose compile, validation or benchmark failed fails the gate with that reason.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tasks.core import store
from tasks.core.figures import FIGURE, FIGURES, Figure, ValidationResult
from tasks.core.files import dir_ref, write_json
from tasks.core.outcomes import ConfigOutcome, Gated, GateFinding
from tasks.core.params import PipelineParams
from tasks.core.records import CompiledArtifact, RunContext, Status
from tasks.core.results import BenchmarkPoint, BenchmarkResult
from tasks.stages.runner import progress, stage

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): great_expectations, pandas.

SUITE = "compile_gate"
RUN_SUBDIR = "gate"  # under the run's prefix in the run store, and the MLflow artifact path
RESULT_FILE = "validation_result.json"
DOCS_DIR = "data_docs"


@dataclass(frozen=True)
class Check:
    """One expectation: a figure (figures.FIGURES) at least or at most the threshold this run's params give."""

    figure: Figure
    threshold: float

    @property
    def column(self) -> str:
        return self.figure.name

    @property
    def floor(self) -> bool:
        return self.figure.gate == ">="

    @property
    def description(self) -> str:
        return self.figure.describe(self.threshold)


def checks(params: PipelineParams) -> list[Check]:
    """Every expectation of the gate, with its threshold taken from the params (a figure whose threshold the run
    leaves unset is not judged)."""
    found = [(f, f.threshold(params)) for f in FIGURES if f.gate]
    return [Check(figure, threshold) for figure, threshold in found if threshold is not None]


def gate_params() -> list[str]:
    """The params the gate's thresholds come from, in the gate's order."""
    return list(dict.fromkeys(name for figure in FIGURES if figure.gate for name in figure.params))


def metrics_rows(validations: list[ValidationResult]) -> list[dict]:
    """The table the suite validates: one row per output of each validated config (None where a figure does
    not apply)."""
    return [
        {
            "config": v.config.key,
            "output": check.name,
            "labelled": check.labelled,
            "rule": check.rule,
            **{figure.name: figure.value(check, v) for figure in FIGURES if figure.gate},
        }
        for v in validations
        for check in v.outputs
    ]


def run_suite(
    rows: list[dict], params: PipelineParams, out_dir: Path
) -> tuple[dict[str, list[str]], dict[str, list[GateFinding]]]:
    """Validate the metrics table with GX; reasons per config key (empty where every expectation holds), and the
    failed expectations as findings."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    reasons: dict[str, list[str]] = {row["config"]: [] for row in rows}
    findings: dict[str, list[GateFinding]] = {key: [] for key in reasons}
    if not rows:
        return reasons, findings
    frame = pd.DataFrame(rows).astype({"labelled": bool})
    shutil.rmtree(out_dir / "gx", ignore_errors=True)  # a retried gate task starts from a new GX project
    context = gx.get_context(mode="file", project_root_dir=str(out_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("pipeline_run")
    batch = source.add_dataframe_asset("config_metrics").add_batch_definition_whole_dataframe("all_configs")
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE))
    for check in checks(params):
        bound = {"min_value" if check.floor else "max_value": check.threshold}
        judged = check.figure.rows
        condition = {"row_condition": judged, "condition_parser": "pandas"} if judged else {}
        suite.add_expectation(
            gxe.ExpectColumnValuesToBeBetween(column=check.column, **bound, **condition, description=check.description)
        )
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=SUITE, data=batch, suite=suite))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=SUITE,
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["config", "output"]},
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    outputs_of = {key: {row["output"] for row in rows if row["config"] == key} for key in reasons}
    (validation,) = outcome.run_results.values()
    write_json(out_dir / RESULT_FILE, validation.to_json_dict())
    for result in validation.results:
        if result.success:
            continue
        config = result.expectation_config
        what = config.description or str(config.kwargs.get("column"))
        failed_rows = result.result.get("unexpected_index_list") or []
        if not failed_rows and result.exception_info and result.exception_info.get("raised_exception"):
            for key in reasons:  # an expectation that could not run fails every config: nothing unchecked passes
                reasons[key].append(f"{config.type} {what}: {result.exception_info.get('exception_message')}")
        for row in failed_rows:
            observed = row.get(config.kwargs["column"])
            # a model with several outputs: the reason names the one that failed
            output = f"output {row['output']!r}: " if len(outputs_of[row["config"]]) > 1 else ""
            reasons[row["config"]].append(f"{output}{config.type} {what}: observed {observed:g}")
            figure = FIGURE[config.kwargs["column"]]
            threshold = config.kwargs["min_value" if figure.gate == ">=" else "max_value"]
            findings[row["config"]].append(
                GateFinding(
                    figure=figure.name,
                    output=row["output"],
                    observed=observed,
                    comparison=figure.gate,
                    threshold=threshold,
                    params=list(figure.params),
                )
            )
    _publish_docs(context, out_dir)
    return reasons, findings


def _publish_docs(context, out_dir: Path) -> None:
    """Copy the Data Docs site out of GX's project folder to ``<out_dir>/data_docs``."""
    site = Path(context.root_directory) / "uncommitted" / "data_docs" / "local_site"
    if site.is_dir():
        shutil.copytree(site, out_dir / DOCS_DIR, dirs_exist_ok=True)


def stage_reasons(compiled: CompiledArtifact, validation: ValidationResult, benchmark: BenchmarkResult) -> list[str]:
    if compiled.status != Status.OK:
        return [f"compile failed: {compiled.reason}"]
    if validation.status != Status.OK:
        return [f"validation {validation.status}: {validation.reason}"]
    if not validation.outputs:
        return ["validation judged no output"]
    if benchmark.status != Status.OK:
        return [f"benchmark {benchmark.status}: {benchmark.reason}"]
    return []


def gate_all(
    artifacts: list[CompiledArtifact],
    validations: dict[str, ValidationResult],
    benchmarks: dict[str, BenchmarkResult],
    params: PipelineParams,
    out_dir: str | Path,
) -> list[ConfigOutcome]:
    """Every config's outcome: stage failures first, then the GX suite over those that validated."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    validated = [validations[a.config.key] for a in artifacts if validations[a.config.key].status == "ok"]
    suite_reasons, suite_findings = run_suite(metrics_rows(validated), params, out_dir)
    outcomes = []
    for compiled in artifacts:
        key = compiled.config.key
        validation, benchmark = validations[key], benchmarks[key]
        reasons = stage_reasons(compiled, validation, benchmark) or suite_reasons.get(key, [])
        if not reasons and validation.status == "ok" and key not in suite_reasons:
            reasons = ["not checked by the gate suite"]  # never pass a config the suite did not see
        unresolved = [] if reasons else unresolved_findings(validation, params)
        outcomes.append(
            ConfigOutcome(
                compiled=compiled,
                validation=validation,
                benchmark=benchmark,
                gate="fail" if reasons else "undecided" if unresolved else "pass",
                gate_reasons=reasons or [_undecided_reason(f, len(validation.outputs) > 1) for f in unresolved],
                gate_findings=suite_findings.get(key, []) if reasons else unresolved,
            )
        )
    return outcomes


def unresolved_findings(validation: ValidationResult, params: PipelineParams) -> list[GateFinding]:
    """Figures that met their threshold while their 95 % interval reaches past it: the validation set cannot tell
    them from the threshold, so the config is neither passed nor failed."""
    found = []
    for output in validation.outputs:
        for check in checks(params):
            bounds = output.intervals.get(check.column)
            point = check.figure.value(output, validation)
            if bounds is None or point is None or not check.figure.params:
                continue
            low, high = bounds
            if (low < check.threshold) if check.floor else (high > check.threshold):
                found.append(
                    GateFinding(
                        figure=check.column,
                        output=output.name,
                        observed=point,
                        comparison=check.figure.gate,
                        threshold=check.threshold,
                        params=list(check.figure.params),
                        interval=bounds,
                        verdict="undecided",
                    )
                )
    return found


def _undecided_reason(finding: GateFinding, several_outputs: bool) -> str:
    name = f"output {finding.output!r}: " if several_outputs else ""
    low, high = finding.interval
    param = ", ".join(finding.params)
    return (
        f"{name}{finding.figure} {finding.observed:.4g}, 95 % interval [{low:.4g}, {high:.4g}] reaches past "
        f"{finding.threshold:g} (param {param}): the validation set cannot resolve +-{(high - low) / 2:.3g}; "
        f"give more samples from more sources (photos, documents: not more crops of the same ones), or a "
        f"looser {param}"
    )


def select(
    outcomes: list[ConfigOutcome], strategy: str = "max_throughput", latency_budget_ms: float | None = None
) -> tuple[ConfigOutcome, BenchmarkPoint] | None:
    """The gate-passing config and measured point that the strategy picks (None if none qualifies).

    max_throughput: the most samples/s; min_latency: the lowest p99 per request (ties: more
    samples/s); max_throughput_under_latency: the most samples/s with p99 within the budget.
    """
    # A shorter sequence-length bucket runs faster on shorter texts only: configs compete at the full length.
    longest = max((o.compiled.config.sequence_length or 0 for o in outcomes), default=0)
    full = [o for o in outcomes if o.compiled.config.sequence_length in (None, longest)]
    candidates = [(o, p) for o in full if o.gate == "pass" and o.benchmark for p in o.benchmark.points if p.stable] or [
        (o, p) for o in full if o.gate == "pass" and o.benchmark for p in o.benchmark.points
    ]
    if strategy == "max_throughput_under_latency":
        if latency_budget_ms is None:
            raise ValueError("max_throughput_under_latency needs a latency budget (ms)")
        candidates = [(o, p) for o, p in candidates if p.latency_ms_p99 <= latency_budget_ms]
    if not candidates:
        return None
    if strategy == "min_latency":
        return min(candidates, key=lambda c: (c[1].latency_ms_p99, -c[1].throughput))
    if strategy in ("max_throughput", "max_throughput_under_latency"):
        return max(candidates, key=lambda c: c[1].throughput)
    raise ValueError(f"unknown selection strategy {strategy!r}")


@stage("gate")
def run(
    ctx: RunContext,
    artifacts: list[CompiledArtifact],
    validations: list[ValidationResult],
    benchmarks: list[BenchmarkResult],
) -> Gated:
    """Join each config's compile, validation and benchmark results (by config key) and gate them."""
    out_dir = ctx.scratch(RUN_SUBDIR)
    shutil.rmtree(out_dir, ignore_errors=True)
    outcomes = gate_all(
        artifacts,
        {v.config.key: v for v in validations},
        {b.subject: b for b in benchmarks},
        ctx.params,
        out_dir,
    )
    docs = None
    if (out_dir / RESULT_FILE).is_file():  # the suite ran (some config validated)
        shutil.rmtree(out_dir / "gx", ignore_errors=True)  # GX's own project folder: its site is in data_docs/
        docs = store.publish(dir_ref(out_dir), store.join(ctx.run_uri, RUN_SUBDIR))
        shutil.rmtree(out_dir, ignore_errors=True)
    for outcome in outcomes:
        progress("gate", f"{outcome.compiled.config.key}: {outcome.gate} " + "; ".join(outcome.gate_reasons))
    return Gated(outcomes=outcomes, docs=docs)
