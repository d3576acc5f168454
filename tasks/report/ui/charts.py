"""The reports' charts as Vega-Lite specs (built with Altair, drawn in the browser by Vega-Embed as SVG):

- ``latency``: throughput against p99 latency of every benchmark point of every config, the Pareto front of the
  configs that passed the gate, and the selected point;
- ``batch``: throughput against batch size, on the batch sizes the run swept, with the CPU baseline;
- ``accuracy``: each gated figure per config with its 95 % interval, against the threshold the run's params set;
- ``trend`` (tasks.report.ui.trend): a model's registered versions, version over version.

Each takes the report (tasks.report.records.RunReport), or rows made from reports, and returns a spec (a dict), or None where there is nothing
to draw. Colours carry meaning only where Airflow's do (a gate verdict in its state colours); the text and axes take
the page's colour mode at drawing time (reports.js).
"""

from __future__ import annotations

from tasks.core.figures import FIGURES, LABELLED, READ_AS_NUMBERS, UNLABELLED
from tasks.core.params import PipelineParams
from tasks.report.records import ConfigRow, RunReport

# Heavy, so imported inside the functions that need them (the API server imports the plugin): altair.

# Airflow 3's state colours (its Chakra theme's green, amber and red, at 500: they read on light and dark)
VERDICT_COLOURS = {"meets": "#008a00", "undecided": "#fe9a00", "fails": "#fb2c36"}
GATE_SHAPES = {"pass": "circle", "undecided": "diamond", "fail": "triangle-up"}
INK = "ink"  # a param: the page's text colour, set by reports.js to the colour mode's (the selected point's ring)
FRONT = "#778ba2"  # gray.500
WIDTH = 420


def alt_module():
    import altair as alt

    return alt


def speed_tooltips(alt) -> list:
    """A point's throughput and p99 latency, as every chart's tooltip shows them."""
    return [
        alt.Tooltip("throughput:Q", format=".1f", title="samples/s"),
        alt.Tooltip("p99:Q", format=".1f", title="p99 ms"),
    ]


def spec_of(chart) -> dict:
    spec = chart.to_dict()
    spec.pop("$schema", None)  # drawn by the Vega-Lite in the served bundle, whichever schema Altair writes
    spec.setdefault("params", []).append({"name": INK, "value": "#161d2d"})
    return spec


def ink(alt):
    return alt.ExprRef(expr=INK)


def pareto(points: list[dict]) -> list[dict]:
    """The points no other point beats on both throughput (higher) and p99 latency (lower), by latency."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p["p99"], -p["throughput"])):
        if p["throughput"] > best:
            front.append(p)
            best = p["throughput"]
    return front


def _points(report: RunReport) -> list[dict]:
    return [
        {
            "config": c.key,
            "gate": c.gate,
            "batch_size": p.batch_size,
            "concurrency": p.concurrency,
            "point": f"batch {p.shape}",
            "throughput": p.throughput,
            "p50": p.latency_ms_p50,
            "p99": p.latency_ms_p99,
            "stable": p.stable,
        }
        for c in report.configs
        for p in c.benchmark
    ]


def considered(rows: list[dict]) -> list[dict]:
    """The points the selection chooses among (gate.select): those of the configs that passed the gate, their stable
    ones where there are any; all points where no config passed (the chart still shows a front)."""
    passed = [r for r in rows if r["gate"] == "pass"] or rows
    return [r for r in passed if r["stable"]] or passed


def _selected(report: RunReport, rows: list[dict]) -> dict | None:
    """The selected config's row at the selected point (its best, where the report names no point)."""
    point = report.selected_point
    chosen = [r for r in rows if r["config"] == report.selected]
    same = [r for r in chosen if point and (r["batch_size"], r["concurrency"]) == (point.batch_size, point.concurrency)]
    return max(same or chosen, key=lambda r: r["throughput"], default=None)


def _tooltip(alt) -> list:
    return [
        alt.Tooltip("config:N"),
        alt.Tooltip("gate:N", title="gate"),
        alt.Tooltip("point:N", title="point"),
        alt.Tooltip("throughput:Q", title="samples/s", format=".1f"),
        alt.Tooltip("p50:Q", title="p50 ms", format=".1f"),
        alt.Tooltip("p99:Q", title="p99 ms", format=".1f"),
        alt.Tooltip("stable:N", title="windows agreed"),
    ]


def _below(alt, columns: int = 1):
    """A legend under the plot (the selected point's label may reach past the plot's right edge)."""
    return alt.Legend(orient="bottom", direction="vertical", columns=columns, symbolOpacity=1)


def latency(report: RunReport) -> dict | None:
    alt = alt_module()
    rows = _points(report)
    if not rows:
        return None
    front = pareto(considered(rows))
    configs = list(dict.fromkeys(r["config"] for r in rows))
    spread = max(r["p99"] for r in rows) / max(min(r["p99"] for r in rows), 1e-9)
    x = alt.X(
        "p99:Q",
        title="p99 latency per request (ms)",
        scale=alt.Scale(type="log" if spread > 20 else "linear", zero=False, nice=False, padding=12),
    )
    y = alt.Y("throughput:Q", title="throughput (samples/s)", scale=alt.Scale(zero=True))
    legend = alt.selection_point(fields=["config"], bind="legend", name="pick")
    points = (
        alt.Chart(alt.Data(values=rows), name="points")
        .mark_point(size=70, strokeWidth=2)
        .encode(
            x=x,
            y=y,
            color=alt.Color("config:N", title="config", sort=configs, legend=_below(alt, columns=2)),
            shape=alt.Shape(
                "gate:N",
                title="gate",
                scale=alt.Scale(domain=list(GATE_SHAPES), range=list(GATE_SHAPES.values())),
                legend=_below(alt),
            ),
            fill=alt.condition(
                "datum.gate == 'pass'", alt.Color("config:N", sort=configs, legend=None), alt.value("transparent")
            ),
            opacity=alt.condition(
                legend,
                alt.Opacity(
                    "stable:O",
                    title="windows agreed",
                    scale=alt.Scale(domain=[True, False], range=[1, 0.35]),
                    legend=_below(alt),
                ),
                alt.value(0.1),
            ),
            tooltip=_tooltip(alt),
        )
        .add_params(legend)
    )
    line = (
        alt.Chart(alt.Data(values=front), name="pareto")
        .mark_line(interpolate="step-after", color=FRONT, strokeDash=[5, 3], strokeWidth=1.5)
        .encode(x=x, y=y, order="p99:Q")
    )
    layers = [line, points]
    chosen = _selected(report, rows)
    if chosen:
        selected = alt.Chart(alt.Data(values=[{**chosen, "label": f"selected: {chosen['config']}"}]))
        layers += [
            selected.mark_point(shape="circle", size=420, filled=False, strokeWidth=2.5, color=ink(alt))
            .encode(x=x, y=y, tooltip=_tooltip(alt))
            .properties(name="selected"),
            selected.mark_text(align="left", dx=14, dy=-12, fontWeight="bold", color=ink(alt))
            .encode(x=x, y=y, text="label:N")
            .properties(name="selectedlabel"),
        ]
    return spec_of(alt.layer(*layers).properties(width=WIDTH, height=300))


def batch(report: RunReport) -> dict | None:
    """Each config's best throughput (over its concurrencies) at each batch size it ran, and the CPU baseline's."""
    alt = alt_module()
    series = [(c.key, False, c.benchmark) for c in report.configs]
    if report.baseline and report.baseline.benchmark:
        series.append((f"CPU baseline ({report.baseline.framework})", True, report.baseline.benchmark))
    rows = []
    for name, baseline, points in series:
        best = {}  # per batch size: the most samples/s of the points whose windows agreed, where any did
        for p in sorted(points, key=lambda p: (p.stable, p.throughput)):
            best[p.batch_size] = p
        rows += [
            {
                "config": name,
                "baseline": baseline,
                "batch_size": b,
                "throughput": p.throughput,
                "point": f"batch {p.shape}",
                "p99": p.latency_ms_p99,
            }
            for b, p in sorted(best.items())
        ]
    if not rows:
        return None
    sizes = sorted({r["batch_size"] for r in rows})
    names = list(dict.fromkeys(r["config"] for r in rows))
    x = alt.X(
        "batch_size:Q",
        title="batch size",
        scale=alt.Scale(
            type="log",
            base=2,
            domain=[sizes[0], sizes[-1]] if len(sizes) > 1 else [sizes[0] / 2, sizes[0] * 2],
            padding=16,
            nice=False,
        ),
        axis=alt.Axis(values=sizes, format="d", grid=False),
    )
    y = alt.Y("throughput:Q", title="best throughput (samples/s)", scale=alt.Scale(zero=True))
    base = alt.Chart(alt.Data(values=rows))
    tooltip = [alt.Tooltip("config:N"), alt.Tooltip("point:N"), *speed_tooltips(alt)]
    colour = alt.Color("config:N", title="config", sort=names)
    dash = alt.StrokeDash("baseline:N", legend=None, scale=alt.Scale(domain=[False, True], range=[[1, 0], [4, 3]]))
    layers = [
        base.mark_line(strokeWidth=2).encode(x=x, y=y, color=colour, strokeDash=dash, detail="config:N"),
        base.mark_point(filled=True, size=60)
        .encode(x=x, y=y, color=colour, tooltip=tooltip)
        .properties(name="batchpoints"),
    ]
    chosen = _selected(report, _points(report))
    if chosen:
        layers.append(
            alt.Chart(alt.Data(values=[chosen]), name="batchselected")
            .mark_point(shape="circle", size=420, filled=False, strokeWidth=2.5, color=ink(alt))
            .encode(x=x, y=y)
        )
    return spec_of(alt.layer(*layers).properties(width=WIDTH, height=300))


def params_of(report: RunReport) -> PipelineParams | None:
    """The run's params as a record, for the gate's thresholds; an old run's params without the fields it no longer
    has; None where they cannot be read."""
    known = {k: v for k, v in (report.params or {}).items() if k in PipelineParams.model_fields}
    try:
        return PipelineParams.model_validate(known)
    except ValueError:
        return None


def _status(value: float, interval, gate: str, threshold: float) -> str:
    meets = value >= threshold if gate == ">=" else value <= threshold
    if not meets:
        return "fails"
    if interval and ((interval[0] < threshold) if gate == ">=" else (interval[1] > threshold)):
        return "undecided"
    return "meets"


def _judges(rows: str, config: ConfigRow) -> bool:
    """Whether the gate judges a figure with this row condition (figures.FIGURES) on the config's primary output."""
    primary = config.primary
    labelled = primary is not None and primary.labelled
    rule = (primary.rule if primary else "") or ("class scores" if primary and primary.class_scores else "tensor")
    return {
        LABELLED: labelled,
        UNLABELLED: not labelled,
        READ_AS_NUMBERS: not labelled and rule != "embedding",
    }.get(rows, True)


def accuracy(report: RunReport) -> dict | None:
    """One panel per gated figure the configs have: the figure per config (primary output) with its 95 % interval,
    and the threshold the run's params give it."""
    alt = alt_module()
    params = params_of(report)
    configs = report.configs
    if params is None or not configs:
        return None
    panels = []
    for figure in FIGURES:
        threshold = figure.threshold(params) if figure.gate and figure.threshold else None
        if threshold is None or not figure.report:
            continue
        rows = []
        for c in configs:
            value = figure.value(c.primary)
            if value is None or not _judges(figure.rows, c):
                continue
            interval = c.primary.intervals.get(figure.name)
            rows.append(
                {
                    "config": c.key,
                    "value": value,
                    "low": interval[0] if interval else value,
                    "high": interval[1] if interval else value,
                    "status": _status(value, interval, figure.gate, threshold),
                    "shown": figure.text(value),
                    "interval": f"[{figure.text(interval[0])}, {figure.text(interval[1])}]" if interval else "",
                }
            )
        if not rows:
            continue
        names = [r["config"] for r in rows]
        x = alt.X("config:N", title=None, sort=names, axis=alt.Axis(labelAngle=-30, labelLimit=120))
        y = alt.Y("value:Q", title=figure.label, scale=alt.Scale(zero=False, padding=8))
        base = alt.Chart(alt.Data(values=rows))
        colour = alt.Color(
            "status:N",
            title="against the threshold",
            scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())),
        )
        tooltip = [
            alt.Tooltip("config:N"),
            alt.Tooltip("shown:N", title=figure.label),
            alt.Tooltip("interval:N", title="95 % interval"),
            alt.Tooltip("status:N", title="against the threshold"),
        ]
        rule = alt.Chart(
            alt.Data(
                values=[
                    {
                        "threshold": threshold,
                        "label": f"{figure.gate} {figure.text(threshold)} ({', '.join(figure.params)})",
                    }
                ]
            )
        )
        panels.append(
            alt.layer(
                base.mark_rule(strokeWidth=1.5).encode(x=x, y="low:Q", y2="high:Q", color=colour),
                base.mark_point(filled=True, size=70)
                .encode(x=x, y=y, color=colour, tooltip=tooltip)
                .properties(name=f"figures_{figure.name}"),
                rule.mark_rule(strokeDash=[6, 3], color=VERDICT_COLOURS["fails"])
                .encode(y="threshold:Q")
                .properties(name=f"threshold_{figure.name}"),
                rule.mark_text(
                    align="right", baseline="bottom", dy=-3, x="width", color=VERDICT_COLOURS["fails"], fontSize=10
                ).encode(y="threshold:Q", text="label:N"),
            ).properties(width=max(150, 46 * len(rows)), height=170, title=figure.label)
        )
    if not panels:
        return None
    return spec_of(alt.concat(*panels, columns=3).resolve_scale(color="shared"))
