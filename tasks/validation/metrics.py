"""How close a compiled model's outputs are to the baseline's: class-score agreement and numeric closeness."""

from __future__ import annotations

import numpy as np

from tasks.core.figures import OutputCheck
from tasks.validation.uncertainty import interval

RELATIVE_EPS = 1e-6  # in |a - b| / (|b| + eps): zero reference outputs do not divide by zero


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Class ids of the k highest logits per sample, best first (ties broken by class id)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: whether any correct class (labels: -1 padded sets) is among the top k."""
    top = top_k(logits, k)
    return np.array(
        [bool(set(row.tolist()) & set(label[label >= 0].tolist())) for row, label in zip(top, labels, strict=True)]
    )


def accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples with any correct class (labels: -1 padded sets) among the top k."""
    return float(np.mean(hits(logits, labels, k)))


NEIGHBOURS = 5


def same_sets(rows: np.ndarray, reference_rows: np.ndarray) -> float:
    """Share of rows (e.g. top-k class ids, neighbour ids) holding the same set of ids as the reference's row."""
    pairs = zip(rows.tolist(), reference_rows.tolist(), strict=True)
    return float(np.mean([set(a) == set(b) for a, b in pairs]))


def top_k_agreement(outputs: np.ndarray, reference: np.ndarray, k: int = 5) -> float:
    """Share of samples whose top-k classes are the baseline's (as sets)."""
    k = min(k, outputs.shape[1])
    return same_sets(top_k(outputs, k), top_k(reference, k))


def top1_kept(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: whether its top class is the baseline's."""
    return outputs.argmax(axis=1) == reference.argmax(axis=1)


def top1_in_top5_kept(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: whether the baseline's top class is among the compiled model's top 5."""
    top = top_k(outputs, min(5, outputs.shape[1]))
    return (top == reference.argmax(axis=1)[:, None]).any(axis=1)


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of samples whose top class is the baseline's."""
    return float(np.mean(top1_kept(outputs, reference)))


def top1_in_top5(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Share of samples whose baseline top class is among the compiled model's top 5."""
    return float(np.mean(top1_in_top5_kept(outputs, reference)))


def top1_probability_shift(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute change of the probability of each sample's baseline top class (softmax of the scores):
    how far the scores themselves moved where it matters, e.g. a cat at 0.79 flattened to 0.42 shifts 0.37.
    Scores that are probabilities already (each row sums to 1) are taken as they are."""
    return float(np.mean(top1_probability_shifts(outputs, reference)))


def top1_probability_shifts(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per sample: the absolute change of the baseline top class's probability (see top1_probability_shift)."""

    def probabilities(scores: np.ndarray) -> np.ndarray:
        scores = scores.astype(np.float64)
        if (scores >= 0).all() and np.allclose(scores.sum(axis=1), 1, atol=1e-3):
            return scores
        return softmax(scores)

    best = reference.argmax(axis=1)
    rows = np.arange(len(reference))
    return np.abs(probabilities(outputs)[rows, best] - probabilities(reference)[rows, best])


def _neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities between samples (a sample to itself: -inf), and each sample's k nearest, nearest first."""
    unit = vectors.astype(np.float64) / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity, np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def neighbour_recall(outputs: np.ndarray, reference: np.ndarray, k: int = NEIGHBOURS) -> float | None:
    """Recall@k: the mean share of each sample's k nearest neighbours (cosine, itself excluded) among the compiled
    outputs that are among its k nearest in the baseline's: what a search index built on the embeddings keeps.
    Near-ties that swap the k-th neighbour cost 1/k of a sample, not the whole sample. None where there are too
    few samples (k + 1) or the output is not one vector per sample."""
    kept = neighbours_kept(outputs, reference, k)
    return None if kept is None else float(np.mean(kept))


def neighbours_kept(outputs: np.ndarray, reference: np.ndarray, k: int = NEIGHBOURS) -> np.ndarray | None:
    """Per sample: the share of its k nearest neighbours that are the baseline's (see neighbour_recall)."""
    if outputs.ndim != 2 or len(outputs) <= k:
        return None
    _, found = _neighbours(outputs, k)
    _, expected = _neighbours(reference, k)
    return np.array([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), expected.tolist(), strict=True)])


def similarity_rank_correlation(outputs: np.ndarray, reference: np.ndarray) -> float | None:
    """Mean over samples of the Spearman rank correlation between its similarities to every other sample in the
    compiled outputs and in the baseline's: does the whole ranking hold, not only the top k."""
    if outputs.ndim != 2 or len(outputs) < 3:
        return None
    a, _ = _neighbours(outputs, 1)
    b, _ = _neighbours(reference, 1)
    off = ~np.eye(len(a), dtype=bool)
    a, b = a[off].reshape(len(a), -1), b[off].reshape(len(b), -1)
    ra = np.argsort(np.argsort(a, axis=1, kind="stable"), axis=1).astype(np.float64)
    rb = np.argsort(np.argsort(b, axis=1, kind="stable"), axis=1).astype(np.float64)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    return float(np.mean((ra * rb).sum(axis=1) / np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1))))


def is_constant(outputs: np.ndarray) -> bool:
    """The same output for every sample (at least two): a model that ignores its input, or a broken compile."""
    return len(outputs) >= 2 and bool((outputs == outputs[:1]).all())


def cosines(outputs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-sample cosine similarity of flattened outputs; two all-zero outputs agree exactly, one zero and one
    not do not."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(np.abs(a - b).max(axis=1) == 0, 1, 0))


def closeness(outputs: np.ndarray, reference: np.ndarray, atol: float = 1e-2, rtol: float = 5e-2) -> dict[str, float]:
    """Lowest per-sample cosine similarity, largest absolute and relative differences, and the share
    of values off by more than ``atol`` and, relatively, by more than ``rtol``."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    cosine = cosines(outputs, reference)
    diff = np.abs(a - b)
    relative = diff / (np.abs(b) + RELATIVE_EPS)
    return {
        "cosine_min": float(cosine.min()),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(relative.max()),
        "out_of_tolerance": float(np.mean((diff > atol) & (relative > rtol))),
    }


VALUES_BELOW = 8  # fewer values per sample are judged by error: the cosine of a scalar is always +-1


def output_rule(values: np.ndarray, class_scores: bool) -> str:
    """Which rule judges an output (figures.OUTPUT_RULES), from what it is."""
    if class_scores:
        return "class scores"
    if int(np.prod(values.shape[1:])) < VALUES_BELOW:
        return "values"
    return "embedding" if values.ndim == 2 else "tensor"


def quantiser_quality(
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    judged_output: str | None,
    allowance: dict[str, float],
) -> float:
    """What the accuracy-aware quantiser keeps high, 1 at best: one minus the largest share of the gate's allowance
    (``allowance``: how far the gate lets each figure move) that a figure the gate judges uses on these inputs.
    Class scores judged by labels: the top-1 probability shift (calibration inputs have no labels, and top-1
    agreement is too coarse on photos whose top class is uncertain: bf16 agrees on only 0.91 of them); embeddings:
    the lowest cosine and recall@5 against the float model's neighbours; other outputs: the lowest cosine."""

    def used(figure: str, moved: float) -> float:
        return moved / max(allowance.get(figure, 0.0), 1e-6)

    if judged_output:
        return 1 - used(
            "top1_probability_shift", top1_probability_shift(outputs[judged_output], reference[judged_output])
        )
    shares = []
    for name, expected in reference.items():
        shares.append(used("cosine_min", 1 - float(cosines(outputs[name], expected).min())))
        recall = neighbour_recall(outputs[name], expected) if output_rule(expected, False) == "embedding" else None
        if recall is not None:
            shares.append(used("neighbour_recall", 1 - recall))
    return 1 - max(shares)


def compare_output(
    name: str,
    outputs: np.ndarray,
    reference: np.ndarray,
    atol: float,
    rtol: float,
    class_scores: bool,
    groups: np.ndarray | None = None,
) -> OutputCheck:
    """One output against the baseline's, by the rule that fits it: class scores by whether the top class is kept
    (top-1 agreement, the baseline's top class within the compiled top 5), how far its probability moved, and
    top-5 set agreement (information: it measures the order of the tail); embeddings by retrieval (recall@5 and the
    rank correlation of similarities) and cosine; a few values per sample by error alone; other tensors by cosine
    and error. A constant or non-finite output is measured as such, for the gate to name. Each share and mean comes
    with its 95 % interval, resampling the samples' ``groups`` (their sources)."""
    if outputs.shape != reference.shape:
        raise ValueError(f"output {name!r} is shaped {outputs.shape}, the baseline's {reference.shape}")
    rule = output_rule(outputs, class_scores)
    nonfinite = int((~np.isfinite(outputs)).sum())
    if nonfinite:  # measured, not raised: the gate's no-NaN expectation names the count
        return OutputCheck(name=name, class_scores=class_scores, nonfinite=nonfinite, rule=rule)
    agreement: dict[str, float | None] = {}
    per_sample: dict[str, np.ndarray | None] = {}
    if class_scores:
        per_sample = {
            "top1_agreement": top1_kept(outputs, reference),
            "top1_in_top5": top1_in_top5_kept(outputs, reference),
            "top1_probability_shift": top1_probability_shifts(outputs, reference),
        }
        agreement = {"top5_agreement": top_k_agreement(outputs, reference)}
    elif rule == "embedding":
        per_sample = {"neighbour_recall": neighbours_kept(outputs, reference)}
        agreement = {"similarity_rank_correlation": similarity_rank_correlation(outputs, reference)}
    agreement |= {figure: None if values is None else float(np.mean(values)) for figure, values in per_sample.items()}
    intervals = {figure: interval(values, groups) for figure, values in per_sample.items() if values is not None}
    close = closeness(outputs, reference, atol, rtol)
    if rule == "values":
        close["cosine_min"] = None
    return OutputCheck(
        name=name,
        class_scores=class_scores,
        rule=rule,
        constant=is_constant(outputs),
        intervals={figure: bounds for figure, bounds in intervals.items() if bounds is not None},
        **agreement,
        **close,
    )


def label_deltas(
    scores: np.ndarray,
    base_scores: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    accuracy_top1_top5: tuple[float, float],
    base_top1_top5: tuple[float, float],
) -> dict:
    """Top-1 and top-5 accuracy of the compiled class scores minus the baseline's, in percentage points, with
    their 95 % intervals: paired, each sample's hit against the baseline's hit on it, resampled by source."""
    k5 = min(5, scores.shape[1])
    intervals = {
        f"top{k}_delta": interval(
            hits(scores, labels, width).astype(int) - hits(base_scores, labels, width).astype(int), groups, scale=100
        )
        for k, width in ((1, 1), (5, k5))
    }
    (top1, top5), (base_top1, base_top5) = accuracy_top1_top5, base_top1_top5
    return {
        "top1_delta": round(100 * (top1 - base_top1), 4),
        "top5_delta": round(100 * (top5 - base_top5), 4),
        "intervals": {figure: bounds for figure, bounds in intervals.items() if bounds is not None},
    }


def served_as_validated(name: str, served: np.ndarray, validated: np.ndarray, atol: float, rtol: float) -> OutputCheck:
    """A served version's output against the one recorded at validation (the same runtime on the same files): its
    closeness, and for class scores the top-5 sets."""
    class_scores = served.ndim == 2 and served.shape[1] >= 5
    agreement = top_k_agreement(served, validated) if class_scores else None
    close = closeness(served, validated, atol, rtol)
    rule = output_rule(served, class_scores)
    return OutputCheck(name=name, class_scores=class_scores, rule=rule, top5_agreement=agreement, **close)


def differs(check: OutputCheck) -> bool:
    """A served output that is not what validation recorded: a value out of tolerance, or a top-5 set changed."""
    return bool(check.out_of_tolerance) or (check.top5_agreement is not None and check.top5_agreement < 1.0)
