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
