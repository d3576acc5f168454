"""devtools.harness_ab: a harness of another revision loads beside today's and measures the same predictors.
(The revision's source comes from git; here it is today's file, so that the test needs no git history.)"""

import inspect
import time

import numpy as np

from devtools.harness_ab import harness_from
from tasks.benchmark import harness as harness_now


def test_a_harness_source_loads_as_its_own_module_and_measures_like_todays():
    then = harness_from(inspect.getsource(harness_now), "harness_at_test")
    assert then is not harness_now and then.__name__ == "harness_at_test"
    assert then.Harness is not harness_now.Harness

    def predict(batch):
        time.sleep(0.01)
        return batch

    settings = then.Harness(window_s=0.1, warmup_s=0.05, max_windows=8)
    point = then.measure([predict], {"x": np.zeros(4)}, 4, settings)
    assert point.windows >= 3 and point.throughput > 0
