"""A config's gate findings as the run page shows them: each failed (or undecided) expectation as figure, output,
observed value, threshold and the param the threshold comes from.

Reports carry them as records (``gate_findings``, tasks.core.outcomes.GateFinding); reports written before that carry
only the gate's sentences (``gate_reasons``), which are read back here so older runs show the same table. A reason
that is not an expectation (a compile that failed, a benchmark that did not run) is kept as text.
"""

from __future__ import annotations

import re

from tasks.core.outcomes import GateFinding
from tasks.report.records import ConfigRow

# tasks.stages.compile_pipeline.gate: "[output 'x': ]expect_column_values_to_be_between top1_agreement >= 0.9
# (param min_top1_agreement)[ (meaning)]: observed 0.85"
_FAILED = re.compile(
    r"^(?:output (?P<q>['\"])(?P<output>.*?)(?P=q): )?(?:expect_\w+ )?(?P<figure>\w+) (?P<cmp>>=|<=) "
    r"(?P<threshold>[-+0-9.eE]+)(?: \(param (?P<param>[^)]*)\))?.*: observed (?P<observed>[-+0-9.eEinfa]+)$"
)
# "[output 'x': ]top1_agreement 0.93, 95 % interval [0.89, 0.98] reaches past 0.9 (param min_top1_agreement): ..."
_UNDECIDED = re.compile(
    r"^(?:output (?P<q>['\"])(?P<output>.*?)(?P=q): )?(?P<figure>\w+) (?P<observed>[-+0-9.eE]+), 95 % interval "
    r"\[(?P<low>[-+0-9.eE]+), (?P<high>[-+0-9.eE]+)\] reaches past (?P<threshold>[-+0-9.eE]+)"
    r"(?: \(param (?P<param>[^)]*)\))?"
)


def _from_reason(reason: str, verdict: str, primary: str) -> GateFinding | None:
    match = (_UNDECIDED if verdict == "undecided" else _FAILED).match(reason)
    if match is None:
        return None
    found = match.groupdict()
    observed, threshold = float(found["observed"]), float(found["threshold"])
    if verdict == "undecided":  # the figure met its threshold; the side it met it from says which bound it is
        interval = (float(found["low"]), float(found["high"]))
        comparison = ">=" if observed >= threshold else "<="
    else:
        interval, comparison = None, found["cmp"]
    return GateFinding(
        figure=found["figure"],
        output=found["output"] or primary,
        observed=observed,
        comparison=comparison,
        threshold=threshold,
        params=[p.strip() for p in (found["param"] or "").split(",") if p.strip()],
        interval=interval,
        verdict=verdict,
    )


def findings(config: ConfigRow) -> tuple[list[GateFinding], list[str]]:
    """(findings, other reasons) of one config: its records, or, in a report from before them, its reasons read back.
    A reason that is no expectation (a stage that failed) stays text."""
    primary = config.outputs[0].name if len(config.outputs) == 1 else ""
    verdict = config.gate if config.gate in ("fail", "undecided") else "fail"
    read = [(reason, _from_reason(reason, verdict, primary)) for reason in config.gate_reasons]
    other = [reason for reason, finding in read if finding is None]
    if config.gate_findings:
        return [f if f.output else f.model_copy(update={"output": primary}) for f in config.gate_findings], other
    return [finding for _, finding in read if finding is not None], other
