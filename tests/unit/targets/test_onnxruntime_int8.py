"""ONNX Runtime int8 by NNCF: the rewrite for ONNX Runtime's kernels keeps every value and makes convolutions fuse."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tasks.core.records import CompileConfig
from tasks.targets.base import CompileError
from tasks.targets.onnxruntime_cpu import TARGET, for_onnxruntime_kernels, nncf_quantise


def small_cnn(path):
    """Conv -> Clip(0, 6) -> Conv (a signed output) -> Relu -> Conv: MobileNetV2's activations in three layers."""
    rng = np.random.default_rng(0)
    weights = [rng.normal(0, 0.3, shape).astype(np.float32) for shape in ((8, 3, 3, 3), (8, 8, 1, 1), (4, 8, 3, 3))]
    initializers = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    initializers += [numpy_helper.from_array(np.float32(v), n) for n, v in (("low", 0.0), ("high", 6.0))]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c0", "low", "high"], ["a0"]),
        helper.make_node("Conv", ["a0", "w1"], ["c1"]),
        helper.make_node("Relu", ["c1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 16, 16])],
        initializers,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def run(model_or_path, inputs, optimized=None):
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = str(optimized)
    source = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"]).run(None, inputs)[0]


def test_nncf_int8_is_rewritten_for_onnxruntime_kernels_with_the_same_values(tmp_path):
    import nncf

    source = small_cnn(tmp_path / "float.onnx")
    rng = np.random.default_rng(1)
    calibration = {"x": rng.normal(0, 1, (32, 3, 16, 16)).astype(np.float32)}
    batch = {"x": rng.normal(0, 1, (4, 3, 16, 16)).astype(np.float32)}

    quantised = nncf.quantize(
        onnx.load(str(source)), nncf.Dataset([{"x": calibration["x"][i : i + 1]} for i in range(32)])
    )
    as_nncf_wrote_it = run(quantised, batch)
    notes = for_onnxruntime_kernels(quantised)
    # the same grid of values: signed quantisers shifted to unsigned, clips the quantiser saturates within dropped
    np.testing.assert_allclose(run(quantised, batch), as_nncf_wrote_it, atol=1e-5)
    assert [n.op_type for n in quantised.graph.node].count("Clip") == 0
    assert [n.op_type for n in quantised.graph.node].count("Relu") == 0
    assert not {"low", "high"} & {t.name for t in quantised.graph.initializer}  # the dropped Clip's bounds
    zero_points = [t for t in quantised.graph.initializer if t.name.startswith("zero_point") and t.dims == []]
    assert zero_points and {t.data_type for t in zero_points} == {TensorProto.UINT8}
    assert "2 Relu/Clip folded" in notes[0]

    # compiled through the target: every convolution runs as ONNX Runtime's fused int8 QLinearConv
    out = tmp_path / "compiled"
    out.mkdir()
    notes = nncf_quantise(source, out / "model.onnx", calibration)
    assert notes[0].startswith("int8: 3 of 3 convolutions and matmuls quantised (NNCF, fast bias correction, 32")
    run(out / "model.onnx", batch, optimized=tmp_path / "optimized.onnx")
    fused = Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    # the last writes the model's float output (NNCF leaves outputs unquantised), so it alone stays a float Conv
    assert fused["QLinearConv"] == 2 and fused["Conv"] == 1 and fused["FusedConv"] == 0, fused
    float_outputs = run(source, batch)
    int8_outputs = run(out / "model.onnx", batch)
    cosine = (int8_outputs * float_outputs).sum() / (np.linalg.norm(int8_outputs) * np.linalg.norm(float_outputs))
    assert cosine > 0.99


def test_onnxruntime_int8_names_its_quantisers_and_refuses_an_unknown_one():
    assert TARGET.flags(CompileConfig(target="onnxruntime", precision="int8"))[0] == "nncf.quantize"
    static = TARGET.flags(CompileConfig(target="onnxruntime", precision="int8", calibration_method="Entropy"))
    assert "calibrate=Entropy" in static and "quant_format=QDQ" in static
    with pytest.raises(
        CompileError, match="unknown calibration method 'KL'; ONNX Runtime int8 has NNCF, Dynamic, MinMax"
    ):
        TARGET.flags(CompileConfig(target="onnxruntime", precision="int8", calibration_method="KL"))
