"""Everything of the Neuron targets that needs no Neuron SDK (it cannot be installed here)."""

import json

import numpy as np
import pytest

from tasks.benchmark.sweep import CopySweep, copy_counts
from tasks.benchmark.windows import Harness
from tasks.compile.run import compile_config
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig
from tasks.datasets import prepare as datasets
from tasks.targets import get
from tasks.targets.neuron import common
from tasks.targets.neuron.inf1 import compiler_args, report_for, tf_compile_kwargs, torch_trace_kwargs
from tasks.targets.neuron.inf2 import trace_kwargs

# The lines tensorflow-neuron logs while it partitions and compiles a ResNet-50 SavedModel.
TF_NEURON_LOG = """\
INFO:tensorflow:Fusing subgraph {subgraph neuron_op_d6f098c01c780733 with input tensors ["<tf.Tensor 'input_10/_0:0'>"]}
INFO:tensorflow:Number of operations in TensorFlow session: 4638
INFO:tensorflow:Number of operations after tf.neuron optimizations: 556
INFO:tensorflow:Number of operations placed on Neuron runtime: 554
INFO:tensorflow:Successfully converted ./resnet50 to ./resnet50_neuron
"""
TORCH_NEURON_LOG = """\
INFO:Neuron:Number of arithmetic operators (pre-compilation) before = 175, fused = 175, percent fused = 100.0%
INFO:Neuron:Number of arithmetic operators (post-compilation) before = 175, compiled = 174, percent compiled = 99.43%
"""


@pytest.mark.parametrize(("parameters", "cores"), [(46_000_000, 8), (25_600_000, 4), (3_504_872, 0), (138_000_000, 28)])
def test_pipeline_core_rule_of_the_neuron_pipelining_guide(parameters, cores):
    assert common.default_pipeline_cores(parameters) == cores


def test_precisions_map_to_the_compilers_casting_flags():
    assert common.neuron_cc_args("fp32", 0) == ["--fast-math", "none"]
    assert common.neuron_cc_args("bf16", 8) == ["--fast-math", "fp32-cast-matmult", "--neuroncore-pipeline-cores", "8"]
    assert common.neuron_cc_args("fp16", 1) == ["--fast-math", "fp32-cast-matmult-fp16"]
    assert common.neuronx_cc_args("bf16") == ["--auto-cast", "matmult", "--auto-cast-type", "bf16"]
    assert common.neuronx_cc_args("fp32") == ["--auto-cast", "none"]
    with pytest.raises(ValueError, match="no cast method for precision 'int8'"):
        common.neuron_cc_args("int8", 0)


def test_sdk_call_arguments_are_built_from_the_config(exported, tmp_path):
    resnet_sized = exported.model_copy(update={"parameters": 46_000_000})
    config = CompileConfig(target="neuron-inf1", precision="bf16", batch_size=8)
    args = compiler_args(resnet_sized, config)
    assert args == ["--fast-math", "fp32-cast-matmult", "--neuroncore-pipeline-cores", "8"]
    assert tf_compile_kwargs(config, args) == {"batch_size": 8, "dynamic_batch_size": False, "compiler_args": args}
    assert torch_trace_kwargs(args, tmp_path) == {
        "compiler_args": args,
        "dynamic_batch_size": False,
        "fallback": True,
        "compiler_workdir": str(tmp_path),
    }
    # pipeline cores given as a param win over the rule; 0 turns pipelining off
    off = CompileConfig(target="neuron-inf1", precision="fp32", batch_size=1, pipeline_cores=0)
    assert compiler_args(resnet_sized, off) == ["--fast-math", "none"]
    assert off.key == "neuron-inf1-fp32-bs1-pc0"
    inf2 = CompileConfig(target="neuron-inf2", precision="fp16", batch_size=4)
    assert trace_kwargs(inf2, tmp_path)["compiler_args"] == ["--auto-cast", "matmult", "--auto-cast-type", "fp16"]


def test_compile_logs_are_parsed_for_operator_counts():
    assert common.parse_tf_compile_log(TF_NEURON_LOG) == {"operators_total": 4638, "operators_on_device": 554}
    assert common.parse_torch_neuron_log(TORCH_NEURON_LOG) == {"operators_total": 175, "operators_on_device": 174}
    assert common.parse_tf_compile_log("nothing here") == {}
    config = CompileConfig(target="neuron-inf1", precision="fp32", batch_size=1)
    report = report_for(config, ["--fast-math", "none"], common.parse_tf_compile_log(TF_NEURON_LOG), [], "1.24")
    assert round(report.on_device_share, 4) == round(554 / 4638, 4)
    with pytest.raises(common.UncompiledGraph):
        report_for(config, [], {"operators_total": 10, "operators_on_device": 0}, [], "1.24")


def _saved_model_with(tmp_path, nodes):
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    graph = proto.meta_graphs.add().graph_def
    for name, op, executable in nodes:
        node = node_def_pb2.NodeDef(name=name, op=op)
        if executable is not None:
            node.attr["executable"].CopyFrom(attr_value_pb2.AttrValue(s=executable))
        graph.node.append(node)
    # TF2 SavedModels keep most nodes inside functions of the graph's library
    function = graph.library.function.add()
    function.signature.name = "__inference_serve_42"
    inner = function.node_def.add(name="neuron_op_inner", op="NeuronOp")
    inner.attr["executable"].CopyFrom(attr_value_pb2.AttrValue(s=b"NEFF-inner"))
    directory = tmp_path / "compiled_saved_model"
    directory.mkdir()
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    return directory


def test_neff_files_are_extracted_from_each_neuron_op_of_a_compiled_graph(tmp_path):
    import hashlib

    saved_model = _saved_model_with(
        tmp_path,
        [
            ("input", "Placeholder", None),
            ("neuron_op_d6f098c0", "NeuronOp", b"NEFF-bytes-1"),
            ("out", "Identity", None),
        ],
    )
    out = tmp_path / "artifact"
    files = common.extract_saved_model_neffs(saved_model, out)
    assert [f.name for f in files] == ["neff/__inference_serve_42.neuron_op_inner.neff", "neff/neuron_op_d6f098c0.neff"]
    assert (out / "neff/neuron_op_d6f098c0.neff").read_bytes() == b"NEFF-bytes-1"
    assert files[1].sha256 == hashlib.sha256(b"NEFF-bytes-1").hexdigest() and files[1].size == 12


def test_a_graph_left_uncompiled_is_a_failure(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    directory = tmp_path / "uncompiled"
    directory.mkdir()
    proto = saved_model_pb2.SavedModel()
    proto.meta_graphs.add().graph_def.node.add(name="conv", op="Conv2D")
    (directory / "saved_model.pb").write_bytes(proto.SerializeToString())
    with pytest.raises(common.UncompiledGraph, match="left uncompiled"):
        common.extract_saved_model_neffs(directory, tmp_path / "out")


def test_neffs_left_in_the_compiler_workdir_are_collected(tmp_path):
    workdir = tmp_path / "workdir"
    (workdir / "sg00").mkdir(parents=True)
    (workdir / "sg00" / "graph.neff").write_bytes(b"neff")
    files = common.collect_workdir_neffs(workdir, tmp_path / "out")
    assert [f.name for f in files] == ["neff/sg00_graph.neff"]
    with pytest.raises(common.UncompiledGraph):
        common.collect_workdir_neffs(tmp_path / "empty", tmp_path / "out2")


def test_neuron_and_tensorrt_are_unavailable_here_with_their_reasons():
    ok, why = get("neuron-inf1").available()
    assert not ok and "tensorflow-neuron is not installed" in why and "torch-neuron is not installed" in why
    ok, why = get("neuron-inf2").available()
    assert not ok and "torch-neuronx is not installed" in why
    ok, why = get("tensorrt").available()
    assert not ok and why


def test_neuron_configs_are_one_per_batch_size(monkeypatch, exported):
    from tasks.stages.compile_pipeline.plan import plan_configs

    target = get("neuron-inf1")
    monkeypatch.setattr(type(target), "available", lambda self: (True, "stubbed for planning only"))
    monkeypatch.setattr(type(target), "accepts", lambda self, exported: "")
    params = PipelineParams(
        targets=["neuron-inf1"], precisions=["fp32", "int8"], batch_sizes=[1, 8], neuron_pipeline_cores=4
    )
    configs, skipped = plan_configs(params, exported)
    assert [c.key for c in configs] == ["neuron-inf1-fp32-bs1-pc4", "neuron-inf1-fp32-bs8-pc4"]


def test_copies_get_disjoint_neuroncore_groups_up_to_the_whole_host():
    assert common.core_groups(4, 1) == ["0", "1", "2", "3"]
    assert common.core_groups(2, 4) == ["0-3", "4-7"]
    assert copy_counts(1) == [1]
    assert copy_counts(4) == [1, 2, 4]
    assert copy_counts(6) == [1, 2, 4, 6]  # ends with every group in use, as NeuronPerf's MAX
    assert common.pipeline_cores_in(["--fast-math", "none", "--neuroncore-pipeline-cores", "4"]) == 4
    assert common.pipeline_cores_in(["--auto-cast", "none"]) == 1


def test_neuroncores_are_counted_from_neuron_ls(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert common.neuroncore_count() == 0  # no Neuron tools on this host
    # what neuron-ls --json-output prints on an inf1.6xlarge (4 devices of 4 NeuronCores), trimmed
    listing = json.dumps(
        [{"neuron_device": i, "bdf": f"00:1{i}.0", "nc_count": 4, "memory_size": 8589934592} for i in range(4)]
    )
    tool = tmp_path / "neuron-ls"
    tool.write_text(f"#!/bin/sh\n[ \"$1\" = --json-output ] && echo '{listing}'\n")
    tool.chmod(0o755)
    assert common.neuroncore_count() == 16


def test_each_model_copy_runs_in_its_own_process_seeing_only_its_cores(exported, dataset_ref, tmp_path):
    # The copy mechanics are the runtime's own on Neuron; here an ONNX Runtime artifact stands in for the
    # model, so what is checked is the harness: one process per copy, each with its NEURON_RT_VISIBLE_CORES.
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path)
    inputs = datasets.load(dataset_ref).inputs(0, 2)
    harness = Harness(window_s=0.2, warmup_s=0.1, max_windows=4)
    sweep = CopySweep(artifact, inputs, harness, "CPU", common.VISIBLE_CORES_ENV, common.core_groups(2, 2))
    sweep.adaptive([2])
    shapes = [(p.copies, p.concurrency, p.visible_cores) for p in sweep.points]
    assert shapes[:2] == [(1, 1, ["0-1"]), (2, 2, ["0-1", "2-3"])], sweep.notes
    assert all(p.throughput > 0 and p.iterations > 0 for p in sweep.points)
    assert sweep.points[1].shape == "2 x 2 copies x 1 streams"


def test_a_copy_that_cannot_load_fails_its_point_with_the_cores_named(exported, tmp_path):
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), tmp_path)
    broken = artifact.model_copy(update={"uri": (tmp_path / "missing").as_uri(), "sha256": "0" * 64})
    sweep = CopySweep(broken, {"input": np.zeros((1, 3, 224, 224), np.float32)}, Harness(), "CPU", "X_CORES", ["5"])
    assert sweep.point(1, 1, 1) is None
    assert "copy on cores 5" in sweep.notes[0]
