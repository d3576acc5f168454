"""The history page's chart: a model's registered versions, version over version: the selected config's
throughput and p99 latency at its selected point, and its accuracy against the CPU baseline; the serving version
ringed."""

from __future__ import annotations

from tasks.core.figures import FIGURES
from tasks.report.ui.charts import FRONT, WIDTH, alt_module, ink, spec_of, speed_tooltips
from tasks.report.ui.collect import VersionEntry

TREND = [f for f in FIGURES if "trend" in f.report]  # accuracy deltas version over version (pp)


def trend(rows: list[dict]) -> dict | None:
    """Version over version: rows of {version, throughput, p99, each TREND figure by its label, verdict, serving}."""
    alt = alt_module()
    if not rows:
        return None
    order = [r["version"] for r in rows]
    x = alt.X("version:N", title=None, sort=order, axis=alt.Axis(labelAngle=0))
    base = alt.Chart(alt.Data(values=rows))
    tooltip = [
        alt.Tooltip("version:N"),
        alt.Tooltip("config:N"),
        *speed_tooltips(alt),
        *(alt.Tooltip(f"{f.label}:Q", format=f.spec) for f in TREND),
        alt.Tooltip("verdict:N", title="gate"),
    ]

    def panel(field: str, title: str, name: str):
        y = alt.Y(f"{field}:Q", title=title, scale=alt.Scale(zero=False, padding=16))
        ring = base.transform_filter("datum.serving").mark_point(
            shape="circle", size=380, filled=False, strokeWidth=2.5, color=ink(alt)
        )
        label = base.mark_text(dy=-14, fontSize=10, color=FRONT).encode(x=x, y=y, text="config:N")
        return alt.layer(
            base.mark_line(color=FRONT).encode(x=x, y=y),
            base.mark_point(filled=True, size=80, color=ink(alt))
            .encode(x=x, y=y, tooltip=tooltip)
            .properties(name=name),
            ring.encode(x=x, y=y),
            *([label] if field == "throughput" else []),
        ).properties(width=WIDTH, height=130)

    deltas = base.transform_fold([f.label for f in TREND], as_=["figure", "delta"]).transform_filter(
        "isValid(datum.delta)"
    )
    bottom = alt.X("version:N", title="registered version", sort=order, axis=alt.Axis(labelAngle=0))
    accuracy_panel = alt.layer(
        deltas.mark_line().encode(
            x=bottom, y=alt.Y("delta:Q", title="accuracy Δ vs CPU (pp)"), color=alt.Color("figure:N", title=None)
        ),
        deltas.mark_point(filled=True, size=70)
        .encode(x=bottom, y="delta:Q", color="figure:N", tooltip=tooltip)
        .properties(name="deltas"),
    ).properties(width=WIDTH, height=130)
    return spec_of(
        alt.vconcat(
            panel("throughput", "throughput (samples/s)", "trendthroughput"),
            panel("p99", "p99 latency (ms)", "trendlatency"),
            accuracy_panel,
        ).resolve_scale(color="independent")
    )


def trend_rows(versions: list[VersionEntry]) -> list[dict]:
    """Chart rows of a model's versions (collect.VersionEntry): the selected config's figures from each run's report."""
    rows = []
    for v in versions:
        report = v.run.report if v.run else None
        config = next((c for c in report.configs if c.key == report.selected), None) if report else None
        point = (report.selected_point if report else None) or (config.best if config else None)
        primary = config.primary if config else None
        rows.append(
            {
                "version": f"v{v.version}",
                "config": config.key if config else "",
                "throughput": point.throughput if point else None,
                "p99": point.latency_ms_p99 if point else None,
                **{f.label: f.value(primary) for f in TREND},
                "verdict": config.gate if config else v.tags.get("validation", ""),
                "serving": v.serving_now,
            }
        )
    return [r for r in rows if r["throughput"] is not None]
