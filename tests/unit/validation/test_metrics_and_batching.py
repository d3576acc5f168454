"""Accuracy, closeness metrics and batched runs."""

import numpy as np
import pytest

from tasks.core.batching import ArrayInputs, run_batched
from tasks.validation.metrics import (
    accuracy,
    closeness,
    softmax,
    top1_agreement,
    top1_in_top5,
    top1_probability_shift,
    top_k,
    top_k_agreement,
)


def test_accuracy_counts_any_correct_class_in_top_k():
    logits = np.array([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 0.0, 1.0]])
    labels = np.array([[2, -1], [1, 3]])
    assert accuracy(logits, labels, 1) == 0.0
    assert accuracy(logits, labels, 2) == 1.0
    assert top_k(logits, 2).tolist() == [[1, 2], [0, 3]]


def test_run_batched_pads_the_last_batch_for_fixed_shape_models():
    seen = []

    def predict(batch):
        seen.append(len(batch["x"]))
        assert len(batch["x"]) == 4
        return {"sum": batch["x"].sum(axis=1, keepdims=True), "doubled": 2 * batch["x"]}

    out = run_batched(predict, ArrayInputs({"x": np.arange(10, dtype=np.float32).reshape(10, 1)}), 4)
    assert seen == [4, 4, 4]
    assert out["sum"][:, 0].tolist() == list(range(10))  # every output, the padding cut off each
    assert out["doubled"][:, 0].tolist() == [2 * i for i in range(10)]


def test_closeness_metrics_survive_zero_outputs():
    reference = np.array([[0.0, 0.0], [1.0, 2.0]])
    same = closeness(reference.copy(), reference)
    assert same["cosine_min"] == pytest.approx(1.0) and same["max_abs_diff"] == same["max_rel_diff"] == 0.0
    off = closeness(np.array([[1e-3, 0.0], [1.0, 2.0]]), reference)
    assert off["cosine_min"] == 0.0  # a zero reference and a non-zero output do not agree
    assert np.isfinite(off["max_rel_diff"]) and off["max_abs_diff"] == 1e-3


def test_a_value_is_out_of_tolerance_only_when_off_by_more_than_atol_and_more_than_rtol():
    reference = np.array([[0.0, 100.0, 1.0, 1.0]])
    outputs = np.array([[0.005, 104.0, 1.02, 1.5]])  # within atol; within rtol; within atol; outside both
    assert closeness(outputs, reference, atol=0.05, rtol=0.05)["out_of_tolerance"] == 0.25
    assert closeness(outputs, reference, atol=0.0, rtol=0.0)["out_of_tolerance"] == 1.0


def test_agreement_judges_the_top_class_and_its_probability_not_the_order_of_the_tail():
    reference = np.log(np.array([[0.79, 0.13, 0.05, 0.02, 0.006, 0.004], [0.1, 0.6, 0.1, 0.1, 0.05, 0.05]]))
    tail_swapped = reference[:, [0, 1, 2, 3, 5, 4]]  # ranks 5 and 6 trade places: another top-5 set
    assert top_k_agreement(tail_swapped, reference) == 0.5
    assert top1_agreement(tail_swapped, reference) == 1 and top1_in_top5(tail_swapped, reference) == 1
    assert top1_probability_shift(tail_swapped, reference) == pytest.approx(0)
    # the cat flattened from 0.79 to 0.42, still ranked first: agreement holds, the shift shows it
    flattened = np.log(np.array([[0.42, 0.3, 0.15, 0.08, 0.03, 0.02], [0.1, 0.6, 0.1, 0.1, 0.05, 0.05]]))
    assert top1_agreement(flattened, reference) == 1
    assert top1_probability_shift(flattened, reference) == pytest.approx(0.37 / 2)
    # scores that are probabilities already (a softmax head) are read as they are, not softmaxed twice
    assert top1_probability_shift(softmax(flattened), softmax(reference)) == pytest.approx(0.37 / 2)
    swapped_top = reference[:, [1, 0, 2, 3, 4, 5]]  # both rows change their top class, kept in the top 5
    assert top1_agreement(swapped_top, reference) == 0 and top1_in_top5(swapped_top, reference) == 1


def test_each_output_is_judged_by_the_rule_that_fits_it():
    from tasks.validation.predictions import compare_output

    rng = np.random.default_rng(0)
    scalar = rng.normal(size=(40, 1)).astype(np.float32)
    check = compare_output("score", scalar + 0.5, scalar, atol=1e-2, rtol=5e-2, class_scores=False)
    # a single value per sample: the cosine would be +-1 whatever the error, so error judges it
    assert check.rule == "values" and check.cosine_min is None
    assert check.max_abs_diff == pytest.approx(0.5) and check.out_of_tolerance > 0.5
    embedding = rng.normal(size=(40, 16)).astype(np.float32)
    check = compare_output("embedding", embedding, embedding, atol=1e-2, rtol=5e-2, class_scores=False)
    assert check.rule == "embedding" and check.neighbour_recall == 1.0
    assert check.similarity_rank_correlation == pytest.approx(1.0)
    hidden = rng.normal(size=(10, 4, 16)).astype(np.float32)
    check = compare_output("hidden", hidden, hidden, atol=1e-2, rtol=5e-2, class_scores=False)
    assert check.rule == "tensor" and check.neighbour_recall is None and check.cosine_min == pytest.approx(1.0)


def test_a_constant_output_is_named_as_such():
    from tasks.validation.predictions import compare_output

    reference = np.random.default_rng(1).normal(size=(12, 16)).astype(np.float32)
    flat = np.repeat(reference[:1], 12, axis=0)  # every sample answered as the first
    assert compare_output("embedding", flat, reference, 1e-2, 5e-2, class_scores=False).constant
    assert not compare_output("embedding", reference, reference, 1e-2, 5e-2, class_scores=False).constant


def test_neighbour_recall_costs_a_near_tie_a_fifth_of_a_sample_not_the_whole_sample():
    """Identical 5-nearest *sets* fail a sample whose 5th and 6th neighbours swap on a rounding difference;
    recall@5 counts the 4 of 5 neighbours it kept."""
    from tasks.validation.metrics import neighbour_recall, same_sets

    rng = np.random.default_rng(2)
    reference = rng.normal(size=(60, 32))
    # every sample's 5th and 6th nearest neighbours as good as tied: a tiny change swaps them
    noisy = reference + rng.normal(scale=1e-3, size=reference.shape)
    exact_sets = same_sets(*(np.argsort(-(v / np.linalg.norm(v, axis=1, keepdims=True)) @ (v / np.linalg.norm(v, axis=1, keepdims=True)).T, axis=1)[:, 1:6] for v in (noisy, reference)))  # fmt: skip
    recall = neighbour_recall(noisy, reference)
    assert recall >= exact_sets and recall > 0.9


def test_the_quantiser_measures_the_figures_the_gate_judges_as_shares_of_its_allowance():
    """What NNCF's accuracy control keeps within half of the gate's allowance is what the gate judges: the lowest
    cosine and recall@5 for embeddings (a mean cosine hides the one sentence the gate fails), the top-1
    probability shift for class scores."""
    from tasks.core.figures import quantiser_tolerance
    from tasks.core.params import PipelineParams
    from tasks.validation.metrics import cosines, neighbour_recall, quantiser_quality

    allowance = quantiser_tolerance(PipelineParams())
    assert allowance == {"top1_probability_shift": 0.1, "cosine_min": 0.01, "neighbour_recall": 0.1}
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(60, 32))
    assert quantiser_quality({"e": reference}, {"e": reference}, None, allowance) == pytest.approx(1.0)
    # one embedding of 60 off by a cosine of about 0.99: the mean cosine stays near 1, the lowest uses the allowance
    one_off = reference.copy()
    one_off[0] += rng.normal(scale=0.15, size=32) * np.linalg.norm(reference[0]) / np.sqrt(32)
    lowest = 1 - closeness(one_off, reference)["cosine_min"]
    mean = 1 - float(np.mean(cosines(one_off, reference)))
    assert mean < 0.001 < 0.005 < lowest
    assert quantiser_quality({"e": one_off}, {"e": reference}, None, allowance) == pytest.approx(1 - lowest / 0.01)
    # neighbours shuffled: recall@5 moves more than the cosines
    shuffled = reference + rng.normal(scale=0.3, size=reference.shape)
    recall = neighbour_recall(shuffled, reference)
    quality = quantiser_quality({"e": shuffled}, {"e": reference}, None, allowance)
    assert recall < 0.9 and quality == pytest.approx(
        1 - max((1 - recall) / 0.1, (1 - closeness(shuffled, reference)["cosine_min"]) / 0.01)
    )
    logits = rng.normal(size=(20, 10)) * 3
    moved = logits + rng.normal(scale=0.5, size=logits.shape)
    shift = top1_probability_shift(moved, logits)
    assert quantiser_quality({"logits": moved}, {"logits": logits}, "logits", allowance) == pytest.approx(
        1 - shift / 0.1
    )
