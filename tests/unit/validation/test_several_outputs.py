"""A model with several outputs: every output is judged against the baseline's, by name; a compile that breaks
one output fails the gate naming it, and a runtime whose outputs do not match the model's names fails clearly."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from tasks.compile.run import compile_config
from tasks.core.files import local_path, tree_sha256
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig
from tasks.core.results import BaselineResult, BenchmarkResult
from tasks.datasets import prepare as datasets
from tasks.sources.export import export_model
from tasks.stages.compile_pipeline.gate import gate_all
from tasks.validation.predictions import baseline_predictions, validate_artifact

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """A Keras digits classifier with a regression head beside its class scores, as a SavedModel; its
    baseline on the labelled digits, and its ONNX Runtime fp32 compile."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(image))
    model = keras.Model(image, {"class_scores": keras.layers.Dense(10)(hidden), "box": keras.layers.Dense(4)(hidden)})
    root = tmp_path_factory.mktemp("two-heads")
    model.export(str(root / "saved_model"))
    params = PipelineParams(model_uri=str(root / "saved_model"), framework="tensorflow", dataset="builtin:digits")
    exported = export_model(params, root / "export")
    ref = datasets.prepare("builtin:digits", root / "data", exported)
    baseline = BaselineResult(
        framework="tensorflow",
        predictions=baseline_predictions(exported, ref, root / "out"),
        benchmark=BenchmarkResult(subject="baseline", status="ok"),
    )
    artifact = compile_config(exported, CompileConfig(target="onnxruntime", precision="fp32"), root / "compiled")
    assert artifact.status == "ok", artifact.reason
    return exported, ref, baseline, artifact


def _edit_compiled(artifact, edit):
    """The compiled ONNX file changed by ``edit(graph)``, with the artifact's sha256 made to match again."""
    path = local_path(artifact.uri) / "model.onnx"
    model = onnx.load(str(path))
    edit(model.graph)
    onnx.save(model, str(path))
    return artifact.model_copy(update={"sha256": tree_sha256(local_path(artifact.uri))})


def _gate(artifact, validation, tmp_path):
    bench = {artifact.config.key: BenchmarkResult(subject=artifact.config.key, status="ok")}
    return gate_all([artifact], {artifact.config.key: validation}, bench, PipelineParams(), tmp_path)[0]


def test_every_output_is_judged_and_the_class_scores_by_the_labels(two_heads, tmp_path):
    exported, ref, baseline, artifact = two_heads
    assert [s.name for s in exported.outputs] == ["box", "class_scores"]
    assert baseline.predictions.class_output == "class_scores"  # the 10-wide output, not the first
    result = validate_artifact(artifact, ref, baseline, tmp_path)
    assert result.status == "ok", result.reason
    box, scores = result.outputs
    assert (box.name, box.class_scores, box.top5_delta) == ("box", False, None)
    # a regression head of 4 values: judged by error (its cosine would say little)
    assert box.rule == "values" and box.cosine_min is None and box.max_abs_diff < 1e-4 and box.out_of_tolerance == 0
    assert (scores.name, scores.class_scores, scores.top1_delta, scores.top5_agreement) == ("class_scores", True, 0, 1)
    assert result.primary is scores  # one-figure summaries show the class scores
    assert _gate(artifact, result, tmp_path / "gate").gate == "pass"


def test_a_compile_that_breaks_one_output_fails_the_gate_naming_it(two_heads, tmp_path):
    exported, ref, baseline, artifact = two_heads
    copy = compile_config(exported, artifact.config, tmp_path / "compiled")

    def shift_box(graph):  # box + [0.5, -0.5, 0.5, -0.5]: the class scores stay exact
        for node in graph.node:
            node.output[:] = ["box_raw" if name == "box" else name for name in node.output]
        graph.initializer.append(numpy_helper.from_array(np.array([0.5, -0.5, 0.5, -0.5], np.float32), "shift"))
        graph.node.append(helper.make_node("Add", ["box_raw", "shift"], ["box"]))

    broken = _edit_compiled(copy, shift_box)
    result = validate_artifact(broken, ref, baseline, tmp_path)
    box, scores = result.outputs
    assert scores.top1_delta == 0 and scores.top5_agreement == 1  # the classifier alone would have passed
    assert box.out_of_tolerance > 0.5
    outcome = _gate(broken, result, tmp_path / "gate")
    assert outcome.gate == "fail"
    assert outcome.gate_reasons and all(r.startswith("output 'box': ") for r in outcome.gate_reasons)
    assert any("out_of_tolerance <= 0 (param atol, rtol)" in r for r in outcome.gate_reasons)


def test_outputs_that_do_not_match_the_models_names_fail_validation_naming_both(two_heads, tmp_path):
    exported, ref, baseline, artifact = two_heads
    copy = compile_config(exported, artifact.config, tmp_path / "compiled")

    def rename(graph):
        for node in graph.node:
            node.output[:] = ["bbox" if name == "box" else name for name in node.output]
        (box,) = [o for o in graph.output if o.name == "box"]
        box.name = "bbox"

    result = validate_artifact(_edit_compiled(copy, rename), ref, baseline, tmp_path)
    assert result.status == "failed"
    assert "outputs ['bbox', 'class_scores'] do not match the model's ['box', 'class_scores'] by name" in result.reason
    assert "missing ['box'], unexpected ['bbox']" in result.reason
