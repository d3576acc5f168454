"""How sure a figure is: a 95 % interval for every accuracy figure, from a paired cluster bootstrap.

Paired: the compiled model and the baseline are judged on the same samples, so a delta is the mean of per-sample
differences (compiled hit - baseline hit), resampled together. Clustered: samples cut from one photo (or texts from
one document) are not independent, so the bootstrap draws whole sources with replacement, never single crops; a
set of 249 crops from 6 photos then has the uncertainty of 6 draws, which is what it has. A figure from a single
source has no interval (None): nothing can say how it would vary.
"""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0  # the same data gives the same interval, run after run


def interval(
    per_sample: np.ndarray, groups: np.ndarray | None = None, scale: float = 1.0
) -> tuple[float, float] | None:
    """The ``CONFIDENCE`` percentile interval of the mean of ``per_sample`` (times ``scale``), resampling the
    ``groups`` (a source id per sample; None: each sample its own) with replacement."""
    values = np.asarray(per_sample, dtype=np.float64)
    if values.size == 0:
        return None
    groups = np.arange(len(values)) if groups is None else np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    if len(sums) < 2:
        return None
    draws = np.random.default_rng(SEED).integers(0, len(sums), size=(RESAMPLES, len(sums)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return round(float(low) * scale, 6), round(float(high) * scale, 6)


def half_width(bounds: tuple[float, float] | None) -> float | None:
    return None if bounds is None else (bounds[1] - bounds[0]) / 2
