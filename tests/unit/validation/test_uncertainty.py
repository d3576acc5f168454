"""Intervals from a paired bootstrap over the samples' sources."""

import numpy as np

from tasks.validation.uncertainty import interval


def test_crops_of_few_photos_are_as_uncertain_as_few_draws_not_as_many_samples():
    # 240 samples, one flip in ten: as independent samples, or as 6 photos of 40 crops each
    rng = np.random.default_rng(0)
    flips = (rng.random(240) < 0.1).astype(float)
    photos = np.repeat(np.arange(6), 40)
    by_sample = interval(flips, None, scale=100)
    by_photo = interval(np.sort(flips)[::-1], photos, scale=100)  # the flips all on the first photo(s)
    assert by_sample[0] < 100 * flips.mean() < by_sample[1]
    assert (by_photo[1] - by_photo[0]) > 2 * (by_sample[1] - by_sample[0])


def test_identical_predictions_have_a_zero_width_interval_and_one_source_none():
    assert interval(np.zeros(50), np.repeat(np.arange(5), 10)) == (0.0, 0.0)
    assert interval(np.ones(50), np.zeros(50)) is None  # one source: nothing says how it would vary
