"""devtools.harness_ab: a harness of another revision loads beside today's and measures the same predictors."""

import time

import numpy as np

from devtools.harness_ab import harness_at
from tasks.benchmark import harness as harness_now


def test_the_harness_of_a_revision_loads_as_its_own_module_and_measures_like_todays():
    then = harness_at("HEAD")
    assert then is not harness_now and then.__name__ == "harness_at_HEAD"

    def predict(batch):
        time.sleep(0.01)
        return batch

    settings = then.Harness(window_s=0.1, warmup_s=0.05, max_windows=8)
    point = then.measure([predict], {"x": np.zeros(4)}, 4, settings)
    assert point.windows >= 3 and 4 / 0.03 < point.throughput < 4 / 0.009
