"""Each output's check against the baseline (OutputCheck, ValidationResult) and the table of its figures: each
figure declared once (label, format, gate direction and the param its threshold comes from, MLflow metric,
registry tag, where the reports show it). The gate, the record stage, the registry's tags, the progress lines
and the reports iterate FIGURES; adding a figure is its computation (tasks.validation.metrics), its field here
and one line in FIGURES."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig, Status
from tasks.core.results import Predictions
from tasks.core.schema import Record

# How an output is judged, by what it is (tasks.validation.metrics.output_rule).
OUTPUT_RULES = {
    "class scores": "top-k against the labels, and agreement with the baseline's top class",
    "embedding": "retrieval against the baseline's neighbours (recall@5), and cosine",
    "values": "absolute and relative error (a scalar or a few values per sample: cosine says nothing there)",
    "tensor": "cosine per sample, and absolute and relative error",
}


class OutputCheck(Record):
    """One output of a compiled config against the same output of the baseline, on the same samples."""

    name: str
    class_scores: bool = False  # judged by top-k against the labels (Predictions.class_output)
    top1_delta: float | None = None  # percentage points, compiled - baseline (class scores only)
    top5_delta: float | None = None
    top5_agreement: float | None = None  # share of samples whose top-5 set equals the baseline's (information)
    top1_agreement: float | None = None  # share of samples whose top class is the baseline's
    top1_in_top5: float | None = None  # share of samples whose baseline top class is in the compiled top 5
    top1_probability_shift: float | None = None  # mean |change| of the baseline top class's probability
    nonfinite: int = 0  # NaN or Inf values; where > 0 the closeness figures are None
    cosine_min: float | None = None  # lowest per-sample cosine similarity to the baseline's
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None  # |a - b| / (|b| + eps), so zero outputs do not divide by zero
    out_of_tolerance: float | None = None  # share of values off by more than atol AND by more than rtol
    # Embeddings (one vector per sample, not class scores): recall@5 of each sample's nearest neighbours against
    # the baseline's (mean share kept), and the mean rank correlation of each sample's similarities (information)
    neighbour_recall: float | None = None
    similarity_rank_correlation: float | None = None
    constant: bool = False  # the same value for every sample: nothing a model computes from its input
    rule: str = ""  # which rule judged it (OUTPUT_RULES)
    # 95 % interval of each figure above that has one, by its name: a paired bootstrap over the samples' sources
    # (tasks.validation.uncertainty); absent where the samples come from one source only
    intervals: dict[str, tuple[float, float]] = {}

    @property
    def labelled(self) -> bool:
        """Class scores judged against labels (a dataset without labels has no top-k deltas)."""
        return self.class_scores and self.top1_delta is not None


class ValidationResult(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    predictions: Predictions | None = None
    outputs: list[OutputCheck] = Field(default_factory=list)  # every output of the model, in its declared order
    host: str = ""  # the worker that ran the validation
    truncated_share: float = 0.0  # text cut to the sequence length, as a share of the validation samples
    # the baseline's accuracy on the same samples (a sequence bucket's fitting samples), where labels judge one
    baseline_top1: float | None = None
    baseline_top5: float | None = None

    # One-figure summaries (progress lines, tables, the registry's tags) show one output: the class scores
    # where labels judge one, else the first.
    @property
    def primary(self) -> OutputCheck | None:
        return next((c for c in self.outputs if c.class_scores), self.outputs[0] if self.outputs else None)

    @property
    def nonfinite_values(self) -> int:
        """NaN or Inf values over every output."""
        return sum(check.nonfinite for check in self.outputs)


def fmt(value: float | None, spec: str = ".3f", missing: str = "-") -> str:
    """The one number formatter of progress lines, reports and tags: ``missing`` where there is no value."""
    return missing if value is None else format(value, spec)


# Which outputs a gate expectation judges: conditions over the gate's table (one row per output of each config).
LABELLED, UNLABELLED = "labelled==True", "labelled==False"
# Values off by atol and rtol judge numbers a consumer reads as numbers, not embeddings: retrieval reads those by
# their neighbours and direction (OUTPUT_RULES), which recall@5 and the cosine judge.
READ_AS_NUMBERS = 'labelled==False and rule!="embedding"'


@dataclass(frozen=True)
class Figure:
    """One figure of a config's validation, declared once: the gate, the record stage, the registry's tags, the
    progress lines and the report all iterate FIGURES. Its value is the OutputCheck field of its name, unless
    ``read`` says otherwise."""

    name: str
    label: str  # as a person reads it: report columns, progress lines, the review
    spec: str = ".3f"
    # The gate: at least (">=") or at most ("<=") the threshold the params give; None where the run sets none
    gate: Literal[">=", "<="] | None = None
    threshold: Callable[[PipelineParams], float | None] | None = None
    params: tuple[str, ...] = ()  # the PipelineParams fields the threshold comes from
    rows: str = ""  # the outputs it judges (a condition over the gate's table), "" for every output
    meaning: str = ""  # what a failure means, where the name does not say it
    # An exact match's value, on the figures the accuracy-aware quantiser keeps within a share of the gate's
    # allowance (metrics.quantiser_quality): the allowance is the threshold's distance from it.
    perfect: float | None = None
    metric: str = ""  # the MLflow metric of each config run (the primary output's value); "" for none
    tag: str = ""  # the registered version's tag; "" for none
    headline: tuple[str, ...] = ()  # the output rules (OUTPUT_RULES) whose progress line and review show it
    # Where the reports show it: the run report's "accuracy" (primary output) and "outputs" tables, the pages'
    # "summary" columns (a run's configs, a model's versions), the history page's version-over-version "trend"
    report: tuple[str, ...] = ()
    read: Callable[[ValidationResult, OutputCheck], float | None] | None = None

    def value(self, check: OutputCheck | None, validation: ValidationResult | None = None) -> float | None:
        if self.read is not None:
            return None if check is None or validation is None else self.read(validation, check)
        return None if check is None else getattr(check, self.name)

    def text(self, value: float | None, missing: str = "-") -> str:
        return fmt(value, self.spec, missing)

    def with_interval(self, check: OutputCheck | None, missing: str = "-") -> str:
        """The figure and its 95 % interval, ``+0.40 [-1.20, +2.01]``; the figure alone where it has none."""
        value = self.value(check)
        bounds = check.intervals.get(self.name) if check is not None and value is not None else None
        shown = self.text(value, missing)
        return shown if bounds is None else f"{shown} [{format(bounds[0], self.spec)}, {format(bounds[1], self.spec)}]"

    def describe(self, threshold: float) -> str:
        """The expectation as the gate's reasons say it, e.g. ``top1_agreement >= 0.9 (param min_top1_agreement)``."""
        source = f" (param {', '.join(self.params)})" if self.params else ""
        meaning = f" ({self.meaning})" if self.meaning else ""
        return f"{self.name} {self.gate} {threshold:g}{source}{meaning}"


CLASS_SCORES = ("class scores",)
CLOSENESS = ("embedding", "tensor")

# In the gate's order: a config's failed expectations are listed in it.
FIGURES = (
    Figure(
        "nonfinite_outputs", "NaN or Inf values", ".0f", "<=", lambda p: 0, read=lambda v, c: c.nonfinite,
        metric="nonfinite_outputs",
    ),
    Figure(
        "constant_output", "constant output", ".0f", "<=", lambda p: 0, meaning="the same output for every sample",
        read=lambda v, c: int(c.constant),
    ),
    # a validation set whose texts are mostly cut judges a model nobody will serve
    Figure(
        "truncated_share", "texts cut to fit", ".1%", "<=", lambda p: 0.5, params=("sequence_length",),
        meaning="validation texts cut to it", read=lambda v, c: v.truncated_share,
    ),
    # labelled accuracy first, as MLPerf judges reduced precision
    Figure(
        "top1_delta", "top-1 Δ (pp)", "+.2f", ">=", lambda p: -p.top1_tolerance_pp, ("top1_tolerance_pp",), LABELLED,
        metric="top1_delta_pp", report=("accuracy", "summary", "trend"),
    ),
    Figure(
        "top5_delta", "top-5 Δ (pp)", "+.2f", ">=", lambda p: -p.top5_tolerance_pp, ("top5_tolerance_pp",), LABELLED,
        metric="top5_delta_pp", tag="top5_delta_pp", headline=CLASS_SCORES, report=("accuracy", "summary", "trend"),
    ),
    # then agreement with the CPU model where it matters: the top class, and the scores themselves
    Figure(
        "top1_agreement", "top-1 agreement", ".3f", ">=", lambda p: p.min_top1_agreement, ("min_top1_agreement",),
        LABELLED, metric="top1_agreement", tag="top1_agreement", headline=CLASS_SCORES,
        report=("accuracy", "outputs", "summary"),
    ),
    Figure(
        "top1_in_top5", "baseline top-1 in top-5", ".3f", ">=", lambda p: p.min_top1_in_top5, ("min_top1_in_top5",),
        LABELLED, metric="top1_in_top5", report=("accuracy",),
    ),
    Figure(
        "top1_probability_shift", "top-1 probability shift", ".3f", "<=", lambda p: p.max_top1_probability_shift,
        ("max_top1_probability_shift",), LABELLED, perfect=0, metric="top1_probability_shift",
        headline=CLASS_SCORES, report=("accuracy", "outputs"),
    ),
    # judged only where a run sets a floor: it measures the order of the tail, not accuracy
    Figure(
        "top5_agreement", "top-5 set agreement", ".3f", ">=", lambda p: p.min_top5_agreement or None,
        ("min_top5_agreement",), LABELLED, metric="top5_agreement", tag="top5_agreement", headline=CLASS_SCORES,
        report=("accuracy", "outputs"),
    ),
    Figure(
        "cosine_min", "lowest cosine", ".5f", ">=", lambda p: p.min_cosine, ("min_cosine",), UNLABELLED, perfect=1,
        metric="cosine_min", tag="cosine_min", headline=CLOSENESS, report=("accuracy", "outputs", "summary"),
    ),
    Figure(
        "neighbour_recall", "neighbour recall@5", ".3f", ">=", lambda p: p.min_neighbour_recall,
        ("min_neighbour_recall",), UNLABELLED, perfect=1, metric="neighbour_recall", headline=("embedding",),
        report=("outputs",),
    ),
    # the share of values off by more than atol and, relatively, by more than rtol
    Figure(
        "out_of_tolerance", "out of tolerance", ".2%", "<=", lambda p: 0, ("atol", "rtol"), READ_AS_NUMBERS,
        metric="out_of_tolerance", report=("outputs",),
    ),
    Figure("max_abs_diff", "max abs diff", ".4f", metric="max_abs_diff", headline=("values",),
           report=("accuracy", "outputs")),
    Figure("max_rel_diff", "max rel diff", ".3g", metric="max_rel_diff", headline=("values",)),
    Figure("similarity_rank_correlation", "similarity rank correlation", ".3f", report=("outputs",)),
)  # fmt: skip
FIGURE = {figure.name: figure for figure in FIGURES}


def quantiser_tolerance(params: PipelineParams) -> dict[str, float]:
    """How far the gate lets each figure the accuracy-aware quantiser measures move from an exact match."""
    return {f.name: round(abs(f.threshold(params) - f.perfect), 6) for f in FIGURES if f.perfect is not None}


def said(check: OutputCheck) -> str:
    """Every figure an output's check has, e.g. ``max abs diff 0.0000, out of tolerance 0.00%, ...``."""
    return ", ".join(
        f"{f.label} {f.text(f.value(check))}" for f in FIGURES if not f.read and f.value(check) is not None
    )


def headline(check: OutputCheck) -> str:
    """An output's figures as its progress line and its review say them, e.g. ``lowest cosine 0.99990, ...``."""
    shown = [f for f in FIGURES if check.rule in f.headline and f.value(check) is not None]
    figures = ", ".join(f"{f.label} {f.text(f.value(check))}" for f in shown)
    return figures + (" (constant: the same output for every sample)" if check.constant else "")
