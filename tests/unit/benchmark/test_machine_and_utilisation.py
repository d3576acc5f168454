"""The machine a benchmark runs on (its matmul peak) and device utilisation read from the monitors."""

import time

import pytest

from tasks.core.cpu import has_native_bf16


def test_machine_context_measures_the_matmul_peak_once_per_host(tmp_path):
    from tasks.benchmark.machine import context, peak_share

    first = context(tmp_path)
    assert first.cpu_model and first.cores_logical >= first.cores_physical >= 1
    assert first.peak_gflops["fp32"] > 0
    assert context(tmp_path) == first  # kept under the home, not measured again
    assert peak_share(100.0, 2 * 10**9, "fp32", first) == pytest.approx(200 / first.peak_gflops["fp32"])
    assert peak_share(100.0, 2 * 10**9, "int8", first) is None  # no int8 peak is measured
    # bf16 only where the CPU runs it (emulated, one 2048 matmul would take 20 s and say nothing)
    assert set(first.peak_gflops) == ({"fp32", "bf16"} if has_native_bf16() else {"fp32"})


def test_tasks_starting_together_on_a_new_host_share_one_measurement(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tasks.benchmark import machine

    calls = []

    def counted(dtype, *args, **kwargs):
        calls.append(dtype)
        time.sleep(0.2)  # long enough for the others to arrive while it measures
        return 1.0

    monkeypatch.setattr(machine, "matmul_peak_gflops", counted)
    with ThreadPoolExecutor(4) as pool:
        contexts = list(pool.map(lambda _: machine.context(tmp_path), range(4)))
    assert len(calls) == len(machine.measured_precisions()) and all(c == contexts[0] for c in contexts)


@pytest.mark.parametrize(
    ("machine_name", "flags", "bf16", "vnni"),
    [
        ("x86_64", "fpu avx2 fma", False, False),  # AVX2 EPYC (Zen 3)
        ("x86_64", "avx2 avx512f avx512_vnni avx512_bf16", True, True),  # Zen 4, Cooper Lake
        ("x86_64", "avx2 avx_vnni amx_bf16 amx_tile", True, True),  # Sapphire Rapids
        ("aarch64", "fp asimd bf16 i8mm", True, True),  # Graviton 3
        ("aarch64", "fp asimd", False, True),
    ],
)
def test_reduced_precisions_are_read_from_the_cpu_flags(monkeypatch, machine_name, flags, bf16, vnni):
    from tasks.core import cpu

    monkeypatch.setattr(cpu, "flags", lambda: frozenset(flags.split()))
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine_name)
    assert (cpu.has_native_bf16(), cpu.has_vnni()) == (bf16, vnni)
    assert (cpu.bf16_missing() == "") == bf16
    assert bf16 or cpu.bf16_missing().startswith("this CPU has no bf16 instructions")


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


def test_a_share_of_peak_above_100_is_flagged_as_a_measurement_error():
    from tasks.report.run_tables import _peak_cell

    assert _peak_cell(0.423) == "42.3" and _peak_cell(None) == "-"
    assert _peak_cell(1.31) == "over 100 (131): peak measured low, a measurement error"
