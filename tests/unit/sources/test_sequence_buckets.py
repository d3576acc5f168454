"""Sequence-length buckets for static-shape targets (Neuron): one config per batch size and bucket, the module
traced at each bucket's length from the Hugging Face directory, validated on the samples that fit the bucket
against the baseline's own outputs for them, and benchmarked at that length.

The Neuron SDK is not installable here, so the trace is ``torch.jit.trace`` (what ``torch_neuronx.trace`` runs
before it hands the graph to neuronx-cc) and the artifact runs on the CPU: everything but the NEFF is exercised."""

import numpy as np
import pytest
import torch
import transformers

from tasks.benchmark.harness import benchmark_artifact
from tasks.benchmark.windows import Harness
from tasks.core.batching import at_sequence_length, example_inputs
from tasks.core.files import local_path, to_uri, tree_sha256
from tasks.core.outcomes import ConfigOutcome
from tasks.core.params import PipelineParams
from tasks.core.records import CompiledArtifact, Status
from tasks.core.results import BaselineResult, BenchmarkPoint, BenchmarkResult
from tasks.datasets import prepare as datasets
from tasks.sources.export import export_model
from tasks.stages.compile_pipeline.gate import select
from tasks.stages.compile_pipeline.plan import plan_configs
from tasks.targets import base as targets_base
from tasks.targets.neuron import common, inf1, inf2
from tasks.validation import predictions
from tasks.validation.predictions import baseline_predictions, validate_artifact
from tests.unit.sources.test_huggingface import SENTENCES, _tiny_bert

LONG = "the cat sat on the mat in the park and the dog ran on the mat today"  # 18 tokens with [CLS] and [SEP]


class TracedOnCpu(targets_base.TargetDefaults):
    """Loads what the Neuron targets write (TorchScript + signature) with plain torch: the CPU side of the test."""

    def load(self, artifact, batch_size):
        directory = local_path(artifact.uri)
        module = torch.jit.load(str(directory / inf2.TORCHSCRIPT_FILE))
        input_names, output_names = targets_base.read_signature(directory)

        def predict(inputs):
            with torch.inference_mode():
                out = module(*(torch.from_numpy(inputs[n]) for n in input_names))
            return {output_names[0]: out.numpy()}

        return predict

    def copy_pinning(self, artifact):
        return None


def _trace(exported, config, out_dir):
    """What inf2's compile does up to neuronx-cc: the rebuilt module traced at the config's batch and bucket."""
    module = common.traceable_module(exported)
    example = example_inputs(at_sequence_length(exported.inputs, config.sequence_length), config.batch_size)
    out_dir.mkdir(parents=True)
    traced = torch.jit.trace(module, tuple(torch.from_numpy(example[s.name]) for s in exported.inputs))
    torch.jit.save(traced, str(out_dir / inf2.TORCHSCRIPT_FILE))
    targets_base.write_signature(out_dir, exported)
    return CompiledArtifact(
        config=config, status=Status.OK, uri=to_uri(out_dir), sha256=tree_sha256(out_dir), files=["model.neuronx.pt"]
    )


def test_buckets_are_checked_and_give_one_neuron_config_per_batch_and_length():
    params = PipelineParams(model_name="m", sequence_length=32, sequence_buckets=[16, 8, 16], batch_sizes=[1, 4])
    assert params.buckets == [8, 16, 32]  # the sequence length is always the longest bucket
    keys = [c.key for c in inf2.TARGET.configs("bf16", params)]
    assert keys == [f"neuron-inf2-bf16-bs{b}-seq{n}" for b in (1, 4) for n in (8, 16, 32)]
    assert [c.key for c in inf1.TARGET.configs("fp32", params)][:2] == [
        "neuron-inf1-fp32-bs1-seq8",
        "neuron-inf1-fp32-bs1-seq16",
    ]
    without = PipelineParams(model_name="m", sequence_length=32, batch_sizes=[1])
    assert without.buckets == [] and [c.key for c in inf2.TARGET.configs("fp32", without)] == ["neuron-inf2-fp32-bs1"]
    with pytest.raises(ValueError, match=r"sequence_buckets \[64\] must be between 1 and sequence_length 32"):
        PipelineParams(model_name="m", sequence_length=32, sequence_buckets=[64])


def test_buckets_for_a_model_without_token_inputs_are_refused(exported):
    params = PipelineParams(model_name="m", sequence_buckets=[16], targets=["onnxruntime"], precisions=["fp32"])
    with pytest.raises(
        ValueError, match=r"sequence_buckets \[16\] are lengths of token inputs, and model .* takes none"
    ):
        plan_configs(params, exported)


def test_a_bucket_is_traced_from_the_directory_validated_on_the_samples_that_fit_and_benchmarked(tmp_path, monkeypatch):
    directory = _tiny_bert(tmp_path / "bert")  # no head: hidden states, an output with a sequence axis
    params = PipelineParams(
        model_name="tiny", model_uri=str(directory), framework="huggingface", sequence_length=24,
        sequence_buckets=[8], batch_sizes=[2],
    )  # fmt: skip
    exported = export_model(params, tmp_path / "export")
    assert inf2.TARGET.accepts(exported) == "" or "not installed" in inf2.TARGET.accepts(exported)
    assert common.torch_source_format(exported) == "exported_program"
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join([*SENTENCES, LONG]))
    ref = datasets.prepare(str(texts), tmp_path / "data", exported)
    base = baseline_predictions(exported, ref, tmp_path / "out")
    baseline = BaselineResult(
        framework="huggingface", predictions=base, benchmark=BenchmarkResult(subject="b", status="ok")
    )
    monkeypatch.setattr(predictions.targets, "get", lambda name: TracedOnCpu())  # the one registry module

    short, full = inf2.TARGET.configs("fp32", params)
    assert (short.sequence_length, full.sequence_length) == (8, 24)
    results = {}
    for config in (short, full):
        artifact = _trace(exported, config, tmp_path / config.key)
        results[config.sequence_length] = validate_artifact(artifact, ref, baseline, tmp_path / "out")
    fits = datasets.load(ref).fitting(8)[1]
    assert list(fits) == [0, 1, 2, 3, 4]  # the long sentence does not fit 8 tokens
    for length, samples in ((8, 5), (24, 6)):
        result = results[length]
        assert result.status == "ok", result.reason
        assert result.predictions.samples == samples
        (check,) = result.outputs  # hidden states cut to the bucket: the same figures for the real tokens
        assert check.cosine_min > 0.9999, check

    # the short bucket's inputs are what the tokenizer gives at 8 tokens
    cut, _ = datasets.load(ref).fitting(8)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    direct = tokenizer(SENTENCES, padding="max_length", max_length=8, return_tensors="np")
    assert np.array_equal(cut.arrays["input_ids"], direct["input_ids"])

    none_fit = short.model_copy(update={"sequence_length": 2})
    failed = validate_artifact(_trace(exported, none_fit, tmp_path / "two"), ref, baseline, tmp_path / "out")
    assert failed.status == "failed" and "no validation sample fits the 2-token bucket" in failed.reason

    bench = benchmark_artifact(
        _trace(exported, short, tmp_path / "bench"), ref, [2], Harness(window_s=0.1, warmup_s=0.05, max_windows=4)
    )
    assert bench.status == "ok", bench.reason
    assert bench.points[0].batch_size == 2


def test_configs_compete_at_the_full_sequence_length():
    """A shorter bucket is faster on shorter texts only: selection compares configs at the longest length."""

    def outcome(key_length, throughput):
        config = inf2.TARGET.configs("fp32", PipelineParams(model_name="m", batch_sizes=[1]))[0]
        config = config.model_copy(update={"sequence_length": key_length})
        point = BenchmarkPoint(
            batch_size=1, throughput=throughput, latency_ms_p50=1, latency_ms_p90=1, latency_ms_p99=1, iterations=10
        )
        return ConfigOutcome(
            compiled=CompiledArtifact(config=config, status=Status.OK),
            benchmark=BenchmarkResult(subject=config.key, status=Status.OK, points=[point]),
            gate="pass",
        )

    chosen, _ = select([outcome(16, 900.0), outcome(128, 300.0)])
    assert chosen.compiled.config.sequence_length == 128
