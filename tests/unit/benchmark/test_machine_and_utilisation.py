"""The machine a benchmark runs on (its matmul peak) and device utilisation read from the monitors."""

import pytest


def test_machine_context_measures_the_matmul_peak_once_per_host(tmp_path):
    from tasks.benchmark.machine import context, peak_share

    first = context(tmp_path)
    assert first.cpu_model and first.cores_logical >= first.cores_physical >= 1
    assert first.peak_gflops["fp32"] > 0
    assert context(tmp_path) == first  # kept under the home, not measured again
    assert peak_share(100.0, 2 * 10**9, "fp32", first) == pytest.approx(200 / first.peak_gflops["fp32"])
    assert peak_share(100.0, 2 * 10**9, "int8", first) is None  # no int8 peak is measured


def test_gpu_and_neuroncore_utilisation_are_read_from_their_monitors_output():
    import json

    from tasks.benchmark.utilisation import GpuProbe, NeuronProbe, probe_for

    assert GpuProbe.parse("1, 87\n") == {1: 87.0}  # nvidia-smi --query-gpu=index,utilization.gpu csv
    report = {  # one line of neuron-monitor's JSON stream, as its user guide documents it
        "neuron_runtime_data": [
            {"pid": 1, "report": {"neuroncore_counters": {"neuroncores_in_use": {
                "0": {"neuroncore_utilization": 89.4}, "1": {"neuroncore_utilization": 0}}}}},
            {"pid": 2, "report": {"neuroncore_counters": {"neuroncores_in_use": {
                "1": {"neuroncore_utilization": 40.5}}}}},
        ]
    }  # fmt: skip
    assert NeuronProbe.parse(json.dumps(report)) == {0: 89.4, 1: 40.5}
    assert probe_for("NeuronCore v2 (inf2/trn1)").device in ("Neuron", "CPU")  # CPU where neuron-monitor is absent
