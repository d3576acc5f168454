"""devtools.harness_ab: a harness of another revision loads beside today's and measures the same predictors.
(The revision's source comes from git; here it is today's tasks.benchmark.windows, the module that now defines
``Harness`` and ``measure``, so that the test needs no git history.)"""

import inspect
import time

import numpy as np

from devtools.harness_ab import harness_from, harness_today
from tasks.benchmark import harness as harness_now
from tasks.benchmark import windows as windows_now


def test_a_harness_source_loads_as_its_own_module_and_measures_like_todays():
    then = harness_from(inspect.getsource(windows_now), "harness_at_test")
    assert then is not windows_now and then.__name__ == "harness_at_test"
    assert then.Harness is not windows_now.Harness and then.Harness.__module__ == "harness_at_test"

    def predict(batch):
        time.sleep(0.01)
        return batch

    settings = then.Harness(window_s=0.1, warmup_s=0.05, max_windows=8)
    point = then.measure([predict], {"x": np.zeros(4)}, 4, settings)
    assert point.windows >= 3 and point.throughput > 0


def test_todays_harness_is_run_with_its_settings_and_its_entry_points():
    """What an old revision's single harness.py held together, today's from the modules that now hold each."""
    now = harness_today()
    assert now.Harness is windows_now.Harness
    assert now.benchmark_baseline is harness_now.benchmark_baseline
    assert now.benchmark_artifact is harness_now.benchmark_artifact
