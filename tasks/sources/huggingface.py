"""Hugging Face model directories: ``config.json``, the weights (``model.safetensors``, or
``pytorch_model.bin`` read weights-only), and the tokenizer files; a local directory or an ``s3://`` prefix.

What the exported graph computes comes from the directory (or the ``hf_task`` param): a sentence-transformers
directory (``modules.json``) is a sentence embedding with its own pooling (``1_Pooling/config.json``) and
normalisation; ``*ForSequenceClassification`` and ``*ForImageClassification`` give class scores; any other model
gives its encoder's hidden states. Inputs come from the model: the tokenizer's input names at ``sequence_length``
tokens, or the image processor's size.

The model is captured with ``torch.export`` and exported to ONNX by ``torch.onnx`` (dynamo), as every PyTorch
source is, rather than with optimum's exporters: one exporter for every PyTorch graph (Inductor compiles the same
ExportedProgram the baseline runs), a pooling head of our own from the directory's config, and no second package
pinning transformers' versions. Nothing is downloaded: ``local_files_only`` and no remote code.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np

from tasks.core.files import dir_ref, file_ref, tree_sha256
from tasks.core.params import PipelineParams
from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.sources import pytorch
from tasks.sources.export import ModelLoadError, reconcile_specs, resolve_source
from tasks.sources.pytorch import code_in_pickle, export_onnx, export_program, forward_check, output_specs

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): torch, transformers.

EXPORTER_PACKAGES = ("torch", "onnx", "onnxscript", "transformers")
CONFIG_FILE = "config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Any one of these makes a tokenizer transformers can load (fast tokenizer file, or a slow one's vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
# What the tokenizer needs beside them, copied into the export so the dataset stage can tokenise text.
TOKENIZER_EXTRA = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt", CONFIG_FILE)
TOKENIZER_FORMAT = "tokenizer"  # ExportedModel.formats key: the tokenizer files, for text datasets
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the order the wrappers take them in
POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")


def read_config(directory: Path) -> dict:
    """``config.json`` of a model directory; a missing or unreadable one is an error naming the file."""
    if not directory.is_dir():
        raise ModelLoadError(f"Hugging Face model {directory} is not a directory")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: a Hugging Face model directory holds its config.json")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(config, dict) or "model_type" not in config:
        raise ModelLoadError(f"{path} names no model_type: it is not a transformers model config")
    return config


def weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise ModelLoadError(f"{directory} holds no weights: expected one of {', '.join(WEIGHT_FILES)}")


def task_of(directory: Path, config: dict, param: str | None) -> str:
    if param:
        return param
    if (directory / "modules.json").is_file():
        return "sentence-embedding"
    architectures = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "sequence-classification"
    if any(a.endswith("ForImageClassification") for a in architectures):
        return "image-classification"
    return "feature-extraction"


def pooling_of(directory: Path) -> tuple[str, bool]:
    """A sentence-transformers directory's pooling mode and whether it normalises (modules.json lists the modules)."""
    modules = json.loads((directory / "modules.json").read_text())
    pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    if pooling is None:
        return "mean_tokens", normalize
    path = directory / pooling.get("path", "") / CONFIG_FILE
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path} (the pooling config modules.json names) is not readable JSON: {exc}") from exc
    modes = [mode for mode in POOLING_MODES if settings.get(f"pooling_mode_{mode}")]
    if len(modes) != 1:
        raise ModelLoadError(f"{path}: exactly one of {POOLING_MODES} must be on, found {modes or 'none'}")
    return modes[0], normalize


def load_model(directory: Path, config: dict, task: str):
    """The transformers model of ``task`` with the directory's weights; weights that do not fill the architecture
    config.json describes (another model's, or a head missing) are an error naming the file."""
    import transformers

    weights = weights_file(directory)
    if weights.suffix == ".bin":  # a pickle: refused if it would import code, as any state dict is
        code = code_in_pickle(weights)
        if code:
            raise ModelLoadError(f"{weights} carries code (its pickle imports {', '.join(code[:5])}); refused")
    auto = {
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "image-classification": transformers.AutoModelForImageClassification,
    }.get(task, transformers.AutoModel)
    try:
        model, info = auto.from_pretrained(
            str(directory), local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for what it cannot read
        raise ModelLoadError(
            f"{directory} cannot be loaded as a {config['model_type']} model for {task} "
            f"({weights.name}): {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    missing, mismatched = sorted(info.get("missing_keys") or []), list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise ModelLoadError(
            f"weights in {weights} do not fit the {config['model_type']} architecture {CONFIG_FILE} describes: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, mismatched shapes {mismatched[:3]}"
        )
    return model.eval()


def tokenizer_inputs(directory: Path, length: int) -> list[TensorSpec]:
    """The tokenizer's inputs the model takes, ``length`` tokens each; no tokenizer files is an error."""
    import transformers

    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{directory} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): a text model's validation text "
            "is tokenised by its own tokenizer"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"the tokenizer in {directory} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    names = [name for name in TEXT_INPUTS if name in tokenizer.model_input_names]
    return [TensorSpec(name=name, shape=["batch", length], dtype="int64") for name in names]


DEFAULT_SEQUENCE_LENGTH = 128  # where the model states no limit of its own
UNLIMITED = 100_000  # transformers' "no limit" sentinels (model_max_length 1e30) are above this


def model_sequence_length(directory: Path, config: dict) -> int:
    """The tokens per sample the model was made for: sentence-transformers' ``max_seq_length`` (what
    SentenceTransformer.encode cuts at), else the tokenizer's ``model_max_length``, else the position embeddings."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        path = directory / name
        if path.is_file():
            value = json.loads(path.read_text()).get(key)
            if isinstance(value, int | float) and 0 < value < UNLIMITED:
                return int(value)
    positions = config.get("max_position_embeddings")
    return int(positions) if isinstance(positions, int) and positions > 0 else DEFAULT_SEQUENCE_LENGTH


@functools.lru_cache(maxsize=4)
def _tokenizer(tokenizer_dir: Path):
    """The export's tokenizer, loaded once per process: a dataset tokenises, and counts what it cuts, with it."""
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)


def truncated(tokenizer_dir: Path, texts: list[str], length: int) -> int:
    """How many of ``texts`` have more tokens than ``length`` (special tokens included): cut when tokenised."""
    tokenizer = _tokenizer(tokenizer_dir)
    return sum(len(ids) > length for ids in tokenizer(texts, truncation=False)["input_ids"])


def image_inputs(config: dict) -> list[TensorSpec]:
    size = config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else (size["height"], size["width"])
    return [
        TensorSpec(name="pixel_values", shape=["batch", config.get("num_channels", 3), height, width], dtype="float32")
    ]


def wrapped(model, task: str, input_names: list[str], pooling: tuple[str, bool] | None):
    """The model as a module taking tensors by position (``input_names``) and giving the task's outputs."""
    import torch

    if list(input_names) != list(TEXT_INPUTS[: len(input_names)]) and task != "image-classification":
        raise ModelLoadError(f"text inputs {input_names} are not a prefix of {list(TEXT_INPUTS)}: not supported")

    class TextModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        # Named parameters, not *tensors: torch.export matches dynamic shapes to the signature.
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            inputs = {name: given[name] for name in input_names}
            out = self.model(**inputs)
            if task == "sequence-classification":
                return out.logits
            hidden = out.last_hidden_state
            if task == "feature-extraction":
                return hidden
            mode, normalize = pooling
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if mode == "cls_token":
                pooled = hidden[:, 0]
            elif mode == "max_tokens":
                pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
            else:
                summed, count = (hidden * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
                pooled = summed / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)
            return torch.nn.functional.normalize(pooled, p=2, dim=1) if normalize else pooled

    class ImageModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values).logits

    return (ImageModel() if task == "image-classification" else TextModel()).eval()


OUTPUT_NAMES = {
    "sentence-embedding": "sentence_embedding",
    "feature-extraction": "last_hidden_state",
    "sequence-classification": "logits",
    "image-classification": "logits",
}


def copy_tokenizer(directory: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in (*TOKENIZER_FILES, *TOKENIZER_EXTRA):
        if (directory / name).is_file():
            shutil.copy2(directory / name, dest / name)
    return dest


def export(params: PipelineParams, out_dir: Path) -> ExportedModel:
    directory = resolve_source(params.model_uri)
    config = read_config(directory)
    weights_file(directory)  # named before transformers reads anything
    task = task_of(directory, config, params.hf_task)
    text = task != "image-classification"
    length = params.sequence_length or model_sequence_length(directory, config)
    declared = tokenizer_inputs(directory, length) if text else image_inputs(config)
    model = load_model(directory, config, task)
    what = f"model {params.model_uri}"
    specs = reconcile_specs(declared, params.input_specs, what)
    pooling = pooling_of(directory) if task == "sentence-embedding" else None
    module = wrapped(model, task, [s.name for s in specs], pooling)
    outputs = output_specs(forward_check(module, specs, what), [OUTPUT_NAMES[task]])
    export_program(module, specs, out_dir / "model.pt2")
    export_onnx(module, specs, outputs, out_dir / "model.onnx")
    formats = {"exported_program": file_ref(out_dir / "model.pt2"), "onnx": file_ref(out_dir / "model.onnx")}
    if text:
        formats[TOKENIZER_FORMAT] = dir_ref(copy_tokenizer(directory, out_dir / TOKENIZER_FORMAT))
    return ExportedModel(
        name=params.model_name,
        framework="huggingface",
        architecture=f"{config['model_type']} {task}" + (f" ({pooling[0]})" if pooling else ""),
        source_uri=params.model_uri,
        source_sha256=tree_sha256(directory),
        parameters=sum(p.numel() for p in model.parameters()),
        inputs=specs,
        outputs=outputs,
        formats=formats,
    )


def rebuilt_module(exported: ExportedModel):
    """The module the export captured, built again from its source directory, for tracers that fix every shape at
    trace time (Neuron traces it once per sequence-length bucket; the ExportedProgram holds one length). A
    directory that changed since the export is refused: the artifact would hold other weights than the export."""
    directory = resolve_source(exported.source_uri)
    if tree_sha256(directory) != exported.source_sha256:
        raise ModelLoadError(f"{exported.source_uri} changed since it was exported (digest differs): export it again")
    task = next((t for t in OUTPUT_NAMES if t in exported.architecture.split()), None)
    if exported.framework != "huggingface" or task is None:
        raise ModelLoadError(f"{exported.name} is not a Hugging Face export ({exported.architecture})")
    config = read_config(directory)
    pooling = pooling_of(directory) if task == "sentence-embedding" else None
    return wrapped(load_model(directory, config, task), task, [s.name for s in exported.inputs], pooling)


def load_reference(exported: ExportedModel):
    """The exported program (the transformers model and its pooling head), run by PyTorch eagerly on CPU."""
    return pytorch.load_reference(exported)


def tokenize(tokenizer_dir: Path, texts: list[str], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """``texts`` as the model's inputs: its own tokenizer, padded or truncated to the specs' sequence length."""
    tokenizer = _tokenizer(tokenizer_dir)
    length = specs[0].shape[1]
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    return {s.name: encoded[s.name].astype(s.dtype) for s in specs}
