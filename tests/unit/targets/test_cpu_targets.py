import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tasks import targets
from tasks.compile.cache import LocalCache
from tasks.compile.run import compile_config
from tasks.core.cpu import has_native_bf16
from tasks.core.files import local_path, tree_sha256
from tasks.core.records import CompileConfig
from tasks.datasets.prepare import load
from tasks.targets.base import CompileError
from tasks.validation.metrics import top_k

NO_BF16 = pytest.mark.skipif(not has_native_bf16(), reason="this CPU has no bf16 instructions: the plan skips bf16")
CONFIGS = [
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "fp32"),
    pytest.param("openvino", "bf16", marks=NO_BF16),
    ("inductor", "fp32"),
    pytest.param("inductor", "bf16", marks=NO_BF16),
]


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One compile cache for the module: a test that needs a config another test compiled reuses it."""
    return LocalCache(tmp_path_factory.mktemp("compile-cache"))


@pytest.fixture(scope="module")
def reference_logits(exported, dataset_ref):

    from tasks.sources.export import load_reference

    outputs = load_reference(exported)(load(dataset_ref).inputs(0, 16))
    assert list(outputs) == [s.name for s in exported.outputs]
    return outputs["logits"]


@pytest.mark.parametrize(("target", "precision"), CONFIGS)
def test_each_target_compiles_and_predicts_like_the_baseline(
    target, precision, exported, dataset_ref, reference_logits, tmp_path, compile_cache
):
    config = CompileConfig(target=target, precision=precision)
    artifact = compile_config(
        exported, config, tmp_path, calibration=local_path(dataset_ref.calibration_uri), cache=compile_cache
    )
    assert artifact.status == "ok", artifact.reason
    assert artifact.sha256 == tree_sha256(local_path(artifact.uri))
    assert artifact.compiler_version and artifact.report.compiler == artifact.compiler
    assert artifact.report.operators_total > 0 and artifact.report.on_device_share == 1.0
    assert artifact.peak_memory_mb > 50 and artifact.compile_seconds > 0
    assert not list(tmp_path.glob(".*.partial"))

    predict = targets.get(target).load(artifact, 8)
    data = load(dataset_ref)
    batches = [predict(data.inputs(0, 8)), predict(data.inputs(8, 16))]
    assert all(list(batch) == ["logits"] for batch in batches)  # every output, by the model's own name
    logits = np.concatenate([batch["logits"] for batch in batches])
    if precision == "fp32":
        np.testing.assert_allclose(logits, reference_logits, atol=1e-3)
    # reduced precisions may reorder close classes (three cat breeds), but keep the baseline's answer in the top 5
    kept = np.mean(
        [ref[0] in got for ref, got in zip(top_k(reference_logits).tolist(), top_k(logits).tolist(), strict=True)]
    )
    assert kept >= 0.9


def test_openvino_runs_requests_in_flight_from_its_async_queue_in_throughput_mode(exported, dataset_ref, tmp_path):
    """One request: the LATENCY hint; several: the THROUGHPUT hint; either way an AsyncInferQueue of that many
    requests, each of which says when it finished (its outputs stay in the request: the benchmark only times)."""
    from tasks.benchmark.harness import stream_loader_for
    from tasks.benchmark.sweep import Sweep
    from tasks.benchmark.windows import Harness

    artifact = compile_config(exported, CompileConfig(target="openvino", precision="fp32"), tmp_path)
    target = targets.get("openvino")
    single, latency = target.load_streams(artifact, 4, 1)
    requests, throughput = target.load_streams(artifact, 4, 3)
    assert latency["PERFORMANCE_HINT"] == "LATENCY" and throughput["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert single.size == 1 and requests.size == 3 and int(throughput["NUM_STREAMS"]) >= 1
    assert int(throughput["OPTIMAL_NUMBER_OF_INFER_REQUESTS"]) >= 1
    data = load(dataset_ref)
    batches = [data.inputs(start, start + 4) for start in (0, 4, 8, 12, 0)]  # more than the queue holds
    for queue in (single, requests):
        finished: dict[int, float] = {}
        for i, batch in enumerate(batches):
            queue.submit(batch, lambda seconds, i=i, into=finished: into.__setitem__(i, seconds))
        queue.wait()
        assert sorted(finished) == list(range(len(batches))) and min(finished.values()) > 0
    # and the harness's points say which mode they ran in, with every request of the queue in flight
    sweep = Sweep(lambda bs: target.load(artifact, bs), batches[0],
                  Harness(window_s=0.1, warmup_s=0.05, max_windows=4), stream_loader=stream_loader_for(target, artifact))  # fmt: skip
    one, two = sweep.point(4, 1), sweep.point(4, 2)
    assert one.runtime["PERFORMANCE_HINT"] == "LATENCY" and two.runtime["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert two.concurrency == 2 and two.throughput > 0 and two.iterations > 0


def test_onnxruntime_shares_the_cores_out_among_its_sessions(exported, dataset_ref, tmp_path):
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path)
    predictors, settings = targets.get("onnxruntime").load_streams(artifact, 4, 2)
    assert len(predictors) == 2 and settings["sessions"] == "2"
    assert int(settings["intra_op_num_threads"]) == max(1, (os.cpu_count() or 1) // 2)
    batch = load(dataset_ref).inputs(0, 4)
    np.testing.assert_allclose(predictors[0](batch)["logits"], predictors[1](batch)["logits"], atol=1e-5)


def test_inductor_runs_streams_on_their_own_runners_with_the_cores_shared_out(
    exported, dataset_ref, tmp_path, compile_cache
):
    """One package runner serialises concurrent calls; streams get a runner each and OpenMP threads that add up to
    the cores (the package reads its thread count at each call: compiled with cpp.dynamic_threads)."""
    config = CompileConfig(target="inductor", precision="fp32")
    artifact = compile_config(exported, config, tmp_path, cache=compile_cache)
    assert "cpp.dynamic_threads" in artifact.report.flags
    target = targets.get("inductor")
    predictors, settings = target.load_streams(artifact, 4, 2)
    assert len(predictors) == 2 and settings["runners"] == "2"
    assert int(settings["intra_op_num_threads"]) == max(1, (os.cpu_count() or 1) // 2)
    batch = load(dataset_ref).inputs(0, 4)
    expected = target.load(artifact, 4)(batch)["logits"]
    with ThreadPoolExecutor(2) as pool:  # both streams at once, each in its own thread, as the harness runs them
        results = list(pool.map(lambda predict: predict(batch)["logits"], predictors))
    for logits in results:
        np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_unsupported_precision_fails_that_config_with_a_reason(exported, tmp_path):
    artifact = compile_config(exported, CompileConfig(target="inductor", precision="int8"), tmp_path)
    assert artifact.status == "failed"
    assert "inductor cannot compile precision 'int8'" in artifact.reason
    assert not (tmp_path / "inductor-int8").exists()
    assert local_path(artifact.log_uri).exists()


def test_a_compile_past_its_time_limit_is_killed(exported, tmp_path):
    artifact = compile_config(exported, CompileConfig(target="inductor", precision="fp32"), tmp_path, timeout_s=1)
    assert artifact.status == "failed"
    assert artifact.reason == "compile timed out after 1 s"
    assert not (tmp_path / "inductor-fp32").exists()


ORPHANED_COMPILER = """
import os, subprocess, sys
compiler = subprocess.Popen(
    [sys.executable, "-c", "import os, sys, time; from tasks.compile.worker import _stop_when_orphaned; "
     "_stop_when_orphaned(int(sys.argv[1]), poll_s=0.1); time.sleep(60)", str(os.getpid())],
    start_new_session=True,
)
print(compiler.pid, flush=True)
os._exit(0)  # the task process dies (its worker was lost) without stopping its compiler
"""


def test_a_compiler_whose_task_died_stops_itself():
    import psutil

    task = subprocess.run([sys.executable, "-c", ORPHANED_COMPILER], capture_output=True, text=True, timeout=60)
    compiler = psutil.Process(int(task.stdout.split()[0]))
    try:  # killed by its own orphan watch, not by us (a zombie not yet reaped by init counts as gone)
        compiler.wait(timeout=30)
    except psutil.TimeoutExpired:
        assert compiler.status() == psutil.STATUS_ZOMBIE


def test_unknown_target_is_named():
    with pytest.raises(
        ValueError, match="unknown target 'tensorrtx'; known targets: inductor, neuron-inf1, .*openvino"
    ):
        targets.get("tensorrtx")


def test_every_target_answers_available_with_a_reason():
    for name, (ok, why) in targets.availability().items():
        assert isinstance(ok, bool) and why, name


def test_a_compile_past_its_memory_limit_fails_only_its_config(exported, dataset_ref, tmp_path):
    # int8 calibration runs the model over the calibration set: about 1 GiB resident for MobileNetV2
    artifact = compile_config(
        exported,
        CompileConfig(target="onnxruntime", precision="int8"),
        tmp_path,
        memory_mb=400,
        calibration=local_path(dataset_ref.calibration_uri),
    )
    assert artifact.status == "failed"
    assert artifact.reason.startswith("compiler exceeded 400 MiB"), artifact.reason
    assert artifact.peak_memory_mb > 0
    assert not (tmp_path / "onnxruntime-int8").exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_peak_memory_is_the_compilers_own_not_the_calling_workers(exported, tmp_path):
    # Linux carries a parent's resident high-water mark into a child it spawns; a worker that
    # already holds a lot must not make a small compile look big (or fail its memory limit).
    held = np.ones(1536 * 2**20, dtype=np.uint8)  # 1.5 GiB, touched so it is resident
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path, memory_mb=1024)
    assert held.sum() == held.size
    assert artifact.status == "ok", artifact.reason
    assert 0 < artifact.peak_memory_mb < 1024


def test_openvino_int8_is_nncf_quantised_and_its_quantiser_refuses_to_run_without_calibration(
    exported, dataset_ref, reference_logits, tmp_path, monkeypatch
):
    from tasks.core.params import PipelineParams
    from tasks.datasets import calibration as calibration_file
    from tasks.targets import openvino_cpu

    target = targets.get("openvino")
    (config,) = target.configs("int8", PipelineParams())
    # the gate's own allowances, of which the quantiser may use half on the calibration inputs
    assert config.quantiser_tolerance == {"top1_probability_shift": 0.1, "cosine_min": 0.01, "neighbour_recall": 0.1}
    config = config.model_copy(update={"judged_output": "logits"})  # the compile stage sets it from the dataset
    with pytest.raises(CompileError, match=r"int8 quantisation needs calibration data \(the dataset's"):
        target.compile(exported, config, tmp_path, None)
    onnxruntime = targets.get("onnxruntime")
    with pytest.raises(CompileError, match="int8 quantisation needs calibration data"):
        onnxruntime.compile(exported, CompileConfig(target="onnxruntime", precision="int8"), tmp_path, {})

    # Accuracy control: asked for scores within 0.0002 / 2 of the float model, NNCF quantises every convolution and
    # matmul, then keeps the ones that cost most in float (one round, on 24 calibration inputs, for time) and the
    # report names them. The default tolerance end to end (all or nearly all int8, and the gate passes it) is in
    # the DAG test.
    monkeypatch.setattr(openvino_cpu, "MAX_RESTORE_ITERATIONS", 1)
    calibration = {k: v[:24] for k, v in calibration_file.load(local_path(dataset_ref.calibration_uri)).items()}
    strict = config.model_copy(update={"quantiser_tolerance": {"top1_probability_shift": 0.0002}})
    (tmp_path / "strict").mkdir()
    quantised, kept = target.compile(exported, strict, tmp_path / "strict", calibration).notes
    assert 40 <= _quantised(quantised) < 53
    assert kept.startswith("kept in float: node_")
    import openvino as ov

    model = ov.Core().read_model(str(tmp_path / "strict" / "model.xml"))
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()) > 40
    logits = ov.Core().compile_model(model, "CPU")(load(dataset_ref).inputs(0, 16))[0]
    assert np.mean(logits.argmax(1) == reference_logits.argmax(1)) >= 0.8


def _quantised(note: str) -> int:
    found = re.fullmatch(r"int8: (\d+) of 53 convolutions and matmuls quantised \(NNCF\)", note)
    assert found, note
    return int(found.group(1))
