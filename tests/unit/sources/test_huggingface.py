"""Hugging Face model directories as a source: the task from the directory, inputs from the tokenizer, text
validation data tokenised by it, embeddings judged by closeness and neighbour recall; bad directories fail
with an error that names the file and the problem."""

import json
import shutil

import numpy as np
import pytest
import torch

from tasks import targets
from tasks.compile.run import compile_config
from tasks.core.cpu import has_native_bf16
from tasks.core.files import local_path
from tasks.core.params import PipelineParams
from tasks.core.records import CompileConfig
from tasks.core.results import BaselineResult, BenchmarkResult
from tasks.core.storage import s3_client
from tasks.datasets import builtin
from tasks.datasets import prepare as datasets
from tasks.sources.export import ModelLoadError, export_model
from tasks.validation.predictions import baseline_predictions, validate_artifact

WORDS = "the a cat dog sat ran on mat park stocks fell rose market rain sun today".split()
SENTENCES = ["the cat sat on the mat", "a dog ran in the park", "stocks fell today", "the market rose", "rain today"]


def _tiny_bert(directory, head: str = "", labels: int = 3, hidden: int = 32):
    """A small random BERT saved as transformers saves one: config.json, model.safetensors, tokenizer files."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    transformers.BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(str(directory))
    config = transformers.BertConfig(
        vocab_size=5 + len(WORDS), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=labels,
    )  # fmt: skip
    torch.manual_seed(0)
    model = (transformers.BertForSequenceClassification if head == "classifier" else transformers.BertModel)(config)
    model.save_pretrained(str(directory))
    return directory


def _params(uri, **extra) -> PipelineParams:
    return PipelineParams(model_name="tiny", model_uri=str(uri), framework="huggingface", sequence_length=16, **extra)


def _validate(exported, dataset, tmp_path, configs=(("onnxruntime", "fp32"),)):
    ref = datasets.prepare(dataset, tmp_path / "data", exported)
    base = baseline_predictions(exported, ref, tmp_path / "out")
    baseline = BaselineResult(
        framework="huggingface", predictions=base, benchmark=BenchmarkResult(subject="b", status="ok")
    )
    results = {}
    for target, precision in configs:
        config = CompileConfig(target=target, precision=precision)
        calibration = local_path(ref.calibration_uri) if ref.calibration_uri else None
        artifact = compile_config(exported, config, tmp_path / "compiled", calibration=calibration)
        assert artifact.status == "ok", artifact.reason
        results[artifact.config.key] = validate_artifact(artifact, ref, baseline, tmp_path / "out")
    return ref, base, results


def test_a_sentence_transformers_directory_is_an_embedding_judged_by_closeness_and_neighbours(tmp_path):
    """all-MiniLM-L6-v2 as its package ships it, on the built-in sentences."""
    exported = export_model(
        PipelineParams(model_name="minilm", model_uri="builtin:all_minilm_l6_v2", framework="huggingface",
                       sequence_length=32),
        tmp_path / "export",
    )  # fmt: skip
    assert exported.architecture == "bert sentence-embedding (mean_tokens)"
    assert [s.name for s in exported.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [(s.name, s.shape) for s in exported.outputs] == [("sentence_embedding", ["batch", 384])]
    assert abs(exported.flops_per_sample - 0.689e9) < 0.1 * 0.689e9  # 6 layers x 32 tokens, counted by hand
    reduced = "bf16" if has_native_bf16() else "fp32"  # the plan skips bf16 on a CPU without it
    ref, base, results = _validate(
        exported,
        "builtin:sentences",
        tmp_path,
        [("openvino", reduced), ("onnxruntime", "int8"), ("openvino", "int8")],
    )
    assert ref.samples == 48 and not ref.labelled and base.top1 is None
    embeddings = np.load(local_path(base.outputs_uri))["sentence_embedding"]
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)  # the directory's Normalize module
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 6]  # two sentences about pets are closer than pets and markets
    (check,) = results[f"openvino-{reduced}"].outputs
    assert check.cosine_min > 0.999 and check.neighbour_recall == 1.0
    # int8 by NNCF's transformer recipe on the 300 built-in calibration sentences (none of them validated on) passes
    # the embedding gate on both runtimes: ONNX Runtime's dynamic int8 fell to a lowest cosine of 0.988, its own
    # static quantiser to 0.27, and OpenVINO's accuracy-aware quantiser on 16 sentences to 0.979
    assert ref.calibration_samples == 300
    for name in ("onnxruntime", "openvino"):
        flags = targets.get(name).fingerprint(exported, CompileConfig(target=name, precision="int8")).flags
        assert "model_type=transformer" in flags and "smooth_quant" in flags
        (check,) = results[f"{name}-int8"].outputs
        assert check.cosine_min >= 0.99 and check.neighbour_recall >= 0.9, (name, check)
    dynamic = CompileConfig(target="onnxruntime", precision="int8", calibration_method="Dynamic")
    assert targets.get("onnxruntime").fingerprint(exported, dynamic).flags[0] == "quantize_dynamic"


def test_a_sequence_classifier_on_labelled_jsonl_is_judged_by_top_k(tmp_path):
    directory = _tiny_bert(tmp_path / "classifier", head="classifier")
    exported = export_model(_params(directory), tmp_path / "export")
    assert exported.architecture == "bert sequence-classification"
    assert [(s.name, s.shape) for s in exported.outputs] == [("logits", ["batch", 3])]
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps({"text": s, "label": i % 3}) for i, s in enumerate(SENTENCES * 2)))
    ref, base, results = _validate(exported, str(data), tmp_path)
    assert ref.labelled and base.class_output == "logits" and base.top1 is not None
    (check,) = results["onnxruntime-fp32"].outputs
    assert check.class_scores and check.top1_delta == 0 and check.top5_agreement == 1.0

    unlabelled = tmp_path / "texts.txt"
    unlabelled.write_text("\n".join(SENTENCES))
    plain = datasets.prepare(str(unlabelled), tmp_path / "d2", exported)
    # int8 calibration: the built-in calibration sentences, or a file beside the data; never the texts themselves
    # (at least the 300 NNCF calibrates on by default, and none of them a validation sentence)
    assert plain.samples == 5 and plain.calibration_samples == 300 and "built-in" in plain.calibration_sources[0]
    builtin_calibration = builtin._builtin_texts("calibration.txt")
    assert len(set(builtin_calibration)) >= 300 and not set(builtin_calibration) & set(
        builtin._builtin_texts("sentences.txt")
    )
    (tmp_path / "texts.calibration.jsonl").write_text('{"text": "calibrate on this"}\n{"text": "and on this"}\n')
    beside = datasets.prepare(str(unlabelled), tmp_path / "d5", exported)
    assert beside.calibration_samples == 2 and beside.calibration_sources == [str(tmp_path / "texts.calibration.jsonl")]
    (tmp_path / "texts.calibration.txt").write_text("calibrate on this\nand on this\nand this too\n")
    beside = datasets.prepare(str(unlabelled), tmp_path / "d4", exported, calibration_samples=2)
    assert beside.calibration_samples == 2 and beside.calibration_sources == [str(tmp_path / "texts.calibration.txt")]
    (tmp_path / "other.txt").write_text("\n".join(SENTENCES))
    (tmp_path / "other.calibration.jsonl").write_text('{"words": "no text here"}\n')
    with pytest.raises(ValueError, match=r'other.calibration.jsonl line 1 has no "text" string'):
        datasets.prepare(str(tmp_path / "other.txt"), tmp_path / "d6", exported)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"text": "the cat", "label": 1}\n{"text": "the dog"}\n')
    with pytest.raises(ValueError, match="1 of 2 lines have a label; all or none must"):
        datasets.prepare(str(mixed), tmp_path / "d3", exported)


def test_text_data_for_a_model_without_a_tokenizer_is_refused(tmp_path, exported):
    (tmp_path / "texts.txt").write_text("a photo of a cat\n")
    with pytest.raises(ValueError, match="a pytorch model carries no tokenizer to read it with"):
        datasets.prepare(str(tmp_path / "texts.txt"), tmp_path / "data", exported)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("config", r"config.json is missing: a Hugging Face model directory holds its config.json"),
        ("weights", r"holds no weights: expected one of model.safetensors"),
        ("tokenizer", r"has no tokenizer \(none of tokenizer.json, vocab.txt"),
        ("other-weights", r"weights in .*model.safetensors do not fit the bert architecture config.json describes"),
        ("bad-config", r"config.json is not readable JSON"),
    ],
)
def test_bad_directories_fail_naming_the_file_and_the_problem(tmp_path, damage, message):
    directory = _tiny_bert(tmp_path / "model")
    if damage == "config":
        (directory / "config.json").unlink()
    elif damage == "bad-config":
        (directory / "config.json").write_text("{not json")
    elif damage == "weights":
        (directory / "model.safetensors").unlink()
    elif damage == "tokenizer":
        for name in ("tokenizer.json", "vocab.txt"):
            (directory / name).unlink()
    else:  # another model's weights under this config
        import transformers

        other = transformers.GPT2Model(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50))
        other.save_pretrained(str(tmp_path / "gpt2"))
        shutil.copy(tmp_path / "gpt2" / "model.safetensors", directory / "model.safetensors")
    with pytest.raises(ModelLoadError, match=message):
        export_model(_params(directory), tmp_path / "export")
    assert not (tmp_path / "export").exists()  # nothing half-written


def test_a_directory_given_as_a_pytorch_state_dict_says_to_use_huggingface(tmp_path):
    directory = _tiny_bert(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="is a directory with config.json: set framework to huggingface"):
        export_model(PipelineParams(model_uri=str(directory)), tmp_path / "export")


@pytest.mark.integration
def test_a_directory_on_s3_is_read_like_a_local_one(local_services, tmp_path):
    directory = _tiny_bert(tmp_path / "model")
    client = s3_client(local_services)
    bucket = local_services.serving_bucket
    for path in directory.iterdir():
        client.upload_file(str(path), bucket, f"hf-sources/tiny/{path.name}")
    exported = export_model(_params(f"s3://{bucket}/hf-sources/tiny/"), tmp_path / "export")
    local = export_model(_params(directory), tmp_path / "export-local")
    assert exported.source_uri == f"s3://{bucket}/hf-sources/tiny/"
    assert exported.source_sha256 == local.source_sha256  # the same files, wherever they were read from
    assert exported.architecture == "bert feature-extraction"
    assert [(s.name, s.shape) for s in exported.outputs] == [("last_hidden_state", ["batch", 16, 32])]
    (tmp_path / "texts.txt").write_text("\n".join(SENTENCES * 2))
    _, _, results = _validate(exported, str(tmp_path / "texts.txt"), tmp_path)
    (check,) = results["onnxruntime-fp32"].outputs
    assert check.cosine_min > 0.9999 and check.neighbour_recall is None  # hidden states are not one vector


def test_the_sequence_length_comes_from_the_model_and_cut_text_is_counted(tmp_path):
    """all-MiniLM-L6-v2 says 256 tokens (sentence_bert_config.json): that, not a fixed 128, is its default; a
    tiny BERT without one gets its tokenizer's or its position embeddings' limit. Texts longer than the length
    are counted, never cut silently."""
    from tasks.sources.export import resolve_source
    from tasks.sources.huggingface import model_sequence_length, read_config, truncated

    minilm = resolve_source("builtin:all_minilm_l6_v2")
    assert model_sequence_length(minilm, read_config(minilm)) == 256
    tiny = _tiny_bert(tmp_path / "tiny")
    assert model_sequence_length(tiny, read_config(tiny)) == 64  # max_position_embeddings
    long_text = " ".join(WORDS * 3)  # 48 words: more than 16 tokens
    assert truncated(tiny, [*SENTENCES, long_text], 16) == 1

    exported = export_model(PipelineParams(model_name="tiny", model_uri=str(tiny), framework="huggingface"),
                            tmp_path / "export")  # fmt: skip
    assert exported.inputs[0].shape == ["batch", 64]
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join([*SENTENCES, long_text * 2, long_text * 2, long_text * 3]))
    ref = datasets.prepare(str(texts), tmp_path / "data", exported)
    assert (ref.sequence_length, ref.truncated_samples, ref.samples) == (64, 3, 8)
