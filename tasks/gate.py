"""Gate: which configs may be registered, with reasons that name the check and the observed value."""

from __future__ import annotations

import math

from tasks.records import BenchmarkResult, CompiledArtifact, ConfigOutcome, ValidationResult


def evaluate(
    compiled: CompiledArtifact,
    validation: ValidationResult,
    benchmark: BenchmarkResult,
    top5_tolerance_pp: float,
    min_cosine: float = 0.99,
) -> ConfigOutcome:
    reasons: list[str] = []
    if compiled.status != "ok":
        reasons.append(f"compile failed: {compiled.reason}")
    elif validation.status != "ok":
        reasons.append(f"validation failed: {validation.reason}")
    else:
        if validation.top5_delta is not None:
            if validation.top5_delta < -top5_tolerance_pp:
                reasons.append(
                    f"top-5 accuracy dropped {-validation.top5_delta:.2f} pp vs the CPU baseline "
                    f"(tolerance {top5_tolerance_pp:.2f} pp)"
                )
        elif validation.cosine_min < min_cosine:  # outputs that are not class scores: judged by closeness
            reasons.append(
                f"outputs drifted from the CPU baseline: lowest cosine similarity {validation.cosine_min:.5f} "
                f"(minimum {min_cosine})"
            )
        if not math.isfinite(validation.max_abs_diff):
            reasons.append("outputs contain NaN or Inf")
        if benchmark.status != "ok":
            reasons.append(f"benchmark failed: {benchmark.reason}")
    return ConfigOutcome(
        compiled=compiled,
        validation=validation,
        benchmark=benchmark,
        gate="fail" if reasons else "pass",
        gate_reasons=reasons,
    )


def select(outcomes: list[ConfigOutcome]) -> ConfigOutcome | None:
    """The gate-passing config with the highest throughput at its best batch size."""
    passing = [o for o in outcomes if o.gate == "pass" and o.benchmark and o.benchmark.best]
    return max(passing, key=lambda o: o.benchmark.best.throughput, default=None)
