"""Serving layouts, pointers and Kubernetes objects: pure functions, no services."""

import json

import pytest

from tasks.core.schema import TensorSpec
from tasks.serving.kubernetes import k8s_objects, k8s_yaml, validate_k8s
from tasks.serving.layout import layout_for, pointer_text, upload_order

INPUTS = [TensorSpec(name="input", shape=["batch", 3, 224, 224], dtype="float32")]
OUTPUTS = [TensorSpec(name="logits", shape=["batch", 1000], dtype="float32")]


@pytest.mark.parametrize(
    "target, files, runtime, graph",
    [
        ("onnxruntime", ["model.onnx"], "triton", "model.onnx"),
        ("tensorrt", ["model.plan"], "triton", "model.plan"),
        ("inductor", ["inputs.json", "model.pt2"], "triton", "model.pt2"),
        ("neuron-inf2", ["model.neuronx.pt", "neff/graph.neff"], "triton", "model.pt"),
        ("openvino", ["model.bin", "model.xml"], "openvino-model-server", "model.xml"),
        ("neuron-inf1", ["neff/a.neff", "saved_model/saved_model.pb", "saved_model/variables/variables.index"],
         "tensorflow-serving", "saved_model.pb"),
    ],
)  # fmt: skip
def test_each_format_gets_its_runtimes_layout_with_the_graph_file_copied_last(target, files, runtime, graph):
    layout = layout_for(target, files)
    assert layout.runtime == runtime and layout.graph_file == graph
    order = upload_order(layout)
    assert sorted(order) == sorted(files) and layout.files[order[-1]] == graph
    if runtime == "tensorflow-serving":  # SavedModel files at the version root, NEFFs alongside
        assert layout.files["saved_model/variables/variables.index"] == "variables/variables.index"
        assert layout.files["neff/a.neff"] == "neff/a.neff"


def test_an_artifact_no_runtime_reads_is_named():
    with pytest.raises(ValueError, match=r"no serving layout for a custom artifact with files \['weights.bin'\]"):
        layout_for("custom", ["weights.bin"])


def triton(text: str):
    """A config.pbtxt as Triton reads it: parsed with its own schema (model_config.proto)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_pointers_pin_one_version_in_each_runtimes_own_config():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = "s3://model-serving/models/mobilenet_v2"
    tf = pointer_text(
        layout_for("neuron-inf1", ["saved_model/saved_model.pb"]), "mobilenet_v2", base, 3, INPUTS, OUTPUTS, 0
    )
    (served,) = text_format.Parse(tf, model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert (served.name, served.base_path, served.model_platform) == ("mobilenet_v2", base, "tensorflow")
    assert list(served.model_version_policy.specific.versions) == [3]
    ovms = json.loads(
        pointer_text(layout_for("openvino", ["model.xml", "model.bin"]), "m", base, 4, INPUTS, OUTPUTS, 64)
    )
    assert ovms["model_config_list"][0]["config"]["model_version_policy"] == {"specific": {"versions": [4]}}
    assert ovms["model_config_list"][0]["config"]["plugin_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    measured = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2", "OPTIMAL_NUMBER_OF_INFER_REQUESTS": "2"}
    ovms = json.loads(pointer_text(layout_for("openvino", ["model.xml", "model.bin"]), "m", base, 4, INPUTS, OUTPUTS,
                                   64, "bf16", measured))  # fmt: skip
    # serving runs in the mode the selected point was measured in (the read-only request count is not a setting)
    assert ovms["model_config_list"][0]["config"]["plugin_config"] == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2"}  # fmt: skip
    config = triton(pointer_text(layout_for("onnxruntime", ["model.onnx"]), "m", base, 5, INPUTS, OUTPUTS, 64))
    assert (config.platform, config.max_batch_size, config.default_model_filename) == (
        "onnxruntime_onnx",
        64,
        "model.onnx",
    )
    (tensor,) = config.input
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == ("input", 11, [3, 224, 224])  # TYPE_FP32, no batch
    assert list(config.version_policy.specific.versions) == [5]
    assert not config.instance_group  # nothing measured: Triton's defaults
    measured = {"sessions": "2", "intra_op_num_threads": "8"}
    config = triton(pointer_text(
        layout_for("onnxruntime", ["model.onnx"]), "m", base, 5, INPUTS, OUTPUTS, 64, "fp32", measured
    ))  # fmt: skip
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, 2)]  # KIND_CPU
    assert config.parameters["intra_op_thread_count"].string_value == "8"
    inductor = triton(pointer_text(layout_for("inductor", ["model.pt2"]), "m", base, 6, INPUTS, OUTPUTS, 64, "fp32",
                                   {"runners": "2", "intra_op_num_threads": "4"}))  # fmt: skip
    assert inductor.backend == "pytorch" and not inductor.platform and inductor.instance_group[0].count == 2
    assert inductor.parameters["INTRA_OP_THREAD_COUNT"].string_value == "4"


def test_a_fixed_batch_artifact_gets_its_full_dims_and_every_dtype_its_triton_type():
    """A Neuron artifact runs one batch size: Triton does not batch it (max_batch_size 0), so dims are the whole
    shape, batch included; bool and int8 inputs get their own types, never TYPE_FP32."""
    from tritonclient.grpc import model_config_pb2

    inputs = [
        TensorSpec(name="input_ids", shape=["batch", 128], dtype="int64"),
        TensorSpec(name="mask", shape=["batch", 128], dtype="bool"),
        TensorSpec(name="scale", shape=["batch", 4], dtype="int8"),
    ]
    outputs = [TensorSpec(name="embedding", shape=["batch", 384], dtype="float16")]
    layout = layout_for("neuron-inf2", ["model.neuronx.pt", "neff/graph.neff"])
    config = triton(pointer_text(layout, "minilm", "s3://b/models/minilm", 2, inputs, outputs, 0, batch_size=8))
    assert config.max_batch_size == 0
    types = model_config_pb2.DataType
    assert [(t.name, types.Name(t.data_type), list(t.dims)) for t in [*config.input, *config.output]] == [
        ("input_ids", "TYPE_INT64", [8, 128]),
        ("mask", "TYPE_BOOL", [8, 128]),
        ("scale", "TYPE_INT8", [8, 4]),
        ("embedding", "TYPE_FP16", [8, 384]),
    ]


def test_a_triton_deployment_loads_its_own_model_alone():
    layout = layout_for("onnxruntime", ["model.onnx"])
    (deployment, _) = k8s_objects(layout, "resnet", 3, "onnxruntime", pointer_uri="s3://b/models/resnet/config.pbtxt",
                                  repository_uri="s3://b/models", s3_endpoint_url=None, region="us-east-1")  # fmt: skip
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--model-control-mode=explicit" in args and "--load-model=resnet" in args  # not every model in s3://b/models
    assert deployment["spec"]["template"]["metadata"]["annotations"]["compile-pipeline/version"] == "3"


@pytest.mark.parametrize(
    "target, files, runtime",
    [
        ("onnxruntime", ["model.onnx"], "triton"),
        ("neuron-inf1", ["saved_model/saved_model.pb"], "tensorflow-serving"),
        ("openvino", ["model.bin", "model.xml"], "openvino-model-server"),
    ],
)
def test_a_dtype_a_runtime_has_no_type_for_is_refused_naming_the_tensor(target, files, runtime, reliability):
    reliability.bad_inputs += 1
    odd = [TensorSpec(name="tokens", shape=["batch", 8], dtype="complex64")]
    with pytest.raises(ValueError, match=rf"tensor 'tokens' has dtype 'complex64', which {runtime} has no type for"):
        pointer_text(layout_for(target, files), "m", "s3://b/m", 1, odd, OUTPUTS, 64)


def test_each_runtime_is_one_room_declaring_its_layout_config_container_and_dtypes():
    """Every layout a target can produce names a registered runtime, and each runtime serves the dtypes the
    exporters write (bool and int8 inputs included) with a container that exposes a gRPC port."""
    from tasks.serving.runtimes import RUNTIMES

    assert set(RUNTIMES) == {"triton", "tensorflow-serving", "openvino-model-server"}
    for runtime in RUNTIMES.values():
        assert {"float32", "float16", "int64", "int32", "int8", "uint8", "bool"} <= set(runtime.dtypes)
        assert runtime.container.image and "grpc" in runtime.container.ports
        assert runtime.container.args("s3://b/m/pointer", "s3://b/m", "m")


def test_kubernetes_objects_for_neuron_tf_serving_follow_the_eks_guide_and_validate():
    layout = layout_for("neuron-inf1", ["saved_model/saved_model.pb"])
    deployment, service = k8s_objects(
        layout,
        "mobilenet_v2",
        3,
        "neuron-inf1",
        "s3://b/models/mobilenet_v2/models.config",
        "s3://b/models",
        None,
        "us-east-1",
    )
    validate_k8s([deployment, service])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["aws.amazon.com/neuron"] == 1
    assert container["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}
    assert {p["containerPort"] for p in container["ports"]} == {8500, 8501}
    assert "--model_config_file=s3://b/models/mobilenet_v2/models.config" in container["args"]
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    assert "&id" not in k8s_yaml([deployment, service])  # plain YAML, no anchors
    cpu, _ = k8s_objects(layout_for("openvino", ["model.xml"]), "m", 1, "openvino", "s3://b/m/config.json", "s3://b", "http://minio:9000", "eu-west-1")  # fmt: skip
    assert "aws.amazon.com/neuron" not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_an_invalid_kubernetes_object_is_refused_with_the_schemas_message():
    layout = layout_for("onnxruntime", ["model.onnx"])
    deployment, _ = k8s_objects(layout, "m", 1, "onnxruntime", "p", "r", None, "us-east-1")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(ValueError, match="Deployment m-triton is not valid Kubernetes: 'two' is not of type"):
        validate_k8s([deployment])


@pytest.mark.parametrize("model", ["mobilenet_v2", "MobileNet.V2", "9lives", "keras-digits", "x" * 120, "a_b.C-9"])
@pytest.mark.parametrize("target", ["onnxruntime", "openvino", "neuron-inf1", "tensorrt"])
def test_every_object_name_for_any_model_name_the_dag_accepts_is_one_a_cluster_takes(model, target):
    from tasks.core.schema import check_safe_name
    from tasks.serving.kubernetes import DNS_1035_LABEL, check_names

    check_safe_name(model, "model name")  # the DAG accepts it
    files = {"neuron-inf1": ["saved_model/saved_model.pb"], "openvino": ["model.xml"], "tensorrt": ["model.plan"]}
    layout = layout_for(target, files.get(target, ["model.onnx"]))
    objects = k8s_objects(layout, model, 1, target, "s3://b/p", "s3://b", None, "us-east-1")
    validate_k8s(objects)  # the schema and the naming rules
    for obj in objects:
        name = obj["metadata"]["name"]
        assert DNS_1035_LABEL.match(name) and len(name) <= 63, name
        assert obj["metadata"]["annotations" if obj["kind"] == "Deployment" else "labels"]
    renamed = {"mobilenet_v2", "MobileNet.V2", "9lives", "x" * 120, "a_b.C-9"}
    assert (objects[0]["metadata"]["name"] != f"{model}-{layout.runtime}") == (model in renamed)
    bad = [dict(objects[0], metadata={**objects[0]["metadata"], "name": "MobileNet.V2"})]
    with pytest.raises(ValueError, match="the name is not a DNS-1035 label"):
        check_names(bad)


def test_two_model_names_that_clean_to_the_same_text_get_different_object_names():
    from tasks.serving.kubernetes import object_name

    assert object_name("mobilenet_v2", "triton") != object_name("mobilenet.v2", "triton")
    assert object_name("keras-digits", "triton") == "keras-digits-triton"  # a name that fits is kept as it is
