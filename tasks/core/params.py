"""The params of the three DAGs (compile_pipeline, retrain_to_deploy, promote_model): each field with its
default, constraints and the trigger form's text, so that the form refuses what the record refuses."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.schema import SAFE_NAME, Record, TensorSpec, check_safe_name
from tasks.targets.registry import TARGET_MODULES

Selection = Literal["max_throughput", "min_latency", "max_throughput_under_latency"]


def _section(name: str, **schema) -> dict:
    """JSON-schema extras of a param: the trigger form's section, and constraints a validator checks with its
    own message (so the form refuses what the record refuses, with one source of truth)."""
    return {"json_schema_extra": {"section": name, **schema}}


MODEL, TARGETS, BENCHMARK, GATE, DATA, LIMITS = "Model", "Targets", "Benchmark", "Gate", "Validation data", "Compile"


class PipelineParams(Record):
    """What a user chooses for one pipeline run: the compile_pipeline DAG's params are generated from this."""

    model_name: str = Field(
        "mobilenet_v2",
        title="Model name",
        description="Registered model name and S3 folder.",
        **_section(MODEL, pattern=SAFE_NAME.pattern),
    )
    model_uri: str = Field(
        "builtin:mobilenet_v2",
        min_length=1,
        title="Model",
        description="pytorch: a state dict (.pt/.pth, loaded weights-only) or module:pkg.mod:fn; "
        "or .safetensors; torchscript: a .pt file; onnx: a .onnx file; tensorflow: a SavedModel dir; "
        "huggingface: a model directory (config.json, model.safetensors or pytorch_model.bin, tokenizer files); "
        "each a local path or an s3:// URI (a key, or a prefix for a directory); "
        "or a registered MLflow model in the ONNX flavor, models:/<name>/<version>. "
        "Built in: builtin:mobilenet_v2, builtin:text_encoder, builtin:keras_digits, builtin:all_minilm_l6_v2.",
        **_section(MODEL),
    )
    # Formats that carry code (TorchScript runs the program stored in the file) are refused unless the
    # user trusts this model's source; state dicts are read weights-only and ONNX/SavedModel are graphs.
    trust_model_code: bool = Field(
        False,
        title="Trust code in the model file",
        description="Needed for TorchScript, whose file carries a program that runs with the model, and for a "
        "module: factory outside TRUSTED_CODE_MODULES. Off: only weights and graphs are read.",
        **_section(MODEL),
    )
    architecture: str = Field(
        "mobilenet_v2",
        title="Architecture",
        description="For a PyTorch state dict: the architecture to rebuild.",
        **_section(MODEL),
    )
    framework: str = Field(
        "pytorch", title="Framework", description="The source format (tasks/sources).", **_section(MODEL)
    )
    hf_task: (
        Literal["sentence-embedding", "feature-extraction", "sequence-classification", "image-classification"] | None
    ) = Field(
        None,
        title="Hugging Face task",
        description="What the exported graph computes; empty: from the directory (modules.json: sentence "
        "embedding with its pooling; config.json architectures: *ForSequenceClassification, "
        "*ForImageClassification; else the encoder's hidden states).",
        **_section(MODEL),
    )
    sequence_length: int | None = Field(
        None,
        ge=1,
        le=8192,
        title="Sequence length",
        description="Hugging Face text models: tokens per sample (texts are padded or cut to it; the report counts "
        "those cut). Empty: the model's own limit (sentence-transformers' max_seq_length, else the tokenizer's "
        "model_max_length, else max_position_embeddings).",
        **_section(MODEL),
    )
    # Static-shape compilers (Neuron) fix the sequence length into the NEFF: as optimum-neuron does, one artifact
    # per length, and serving pads a request to the smallest bucket that holds it. Dynamic-shape targets compile once.
    sequence_buckets: list[int] = Field(
        default_factory=list,
        title="Sequence-length buckets",
        description="Hugging Face text models on static-shape targets (Neuron): shorter lengths that also get an "
        "artifact each, validated on the samples that fit; the sequence length is always the longest. Empty: the "
        "sequence length only.",
        **_section(MODEL),
    )
    input_specs: list[TensorSpec] | None = Field(
        None,
        title="Input specs",
        description='For formats that do not carry them, e.g. [{"name": "input", '
        '"shape": ["batch", 3, 224, 224], "dtype": "float32"}].',
        **_section(MODEL),
    )
    # Every registered target by default: those that cannot run here are skipped and the report says why.
    targets: list[str] = Field(
        default_factory=lambda: list(TARGET_MODULES),
        min_length=1,
        title="Compile targets",
        **_section(TARGETS),
    )
    precisions: list[str] = Field(
        default_factory=lambda: ["fp32", "bf16", "int8"],
        min_length=1,
        title="Precisions",
        description="Each target compiles the ones it supports.",
        **_section(TARGETS),
    )
    # Batch sizes the benchmark walks up (stopping where the gain falls under 5 %); Neuron compiles each.
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64],
        min_length=1,
        title="Batch sizes",
        description="The benchmark walks them up until throughput gains fall under 5 %; "
        "Neuron compiles one artifact per batch size.",
        **_section(BENCHMARK, items={"type": "integer", "minimum": 1, "maximum": 1024}),
    )
    max_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        title="Most concurrent streams",
        description="The benchmark doubles the streams at the best batch while throughput still grows by 5 %, "
        "up to this.",
        **_section(BENCHMARK),
    )
    benchmark_window_s: float = Field(
        # 0.5: windows run between call ends (exact whatever their length), and three that agree within 10 %
        # judge a point as well as longer ones (devtools.bench's careful grid checks the pick, docs/benchmarks.md)
        default=0.5,
        gt=0,
        le=60,
        title="Benchmark window (s)",
        description="The shortest window (each also holds a call per stream); windows are repeated until 3 in a row "
        "agree within 10 %.",
        **_section(BENCHMARK),
    )
    selection: Selection = Field(
        "max_throughput",
        title="Selection strategy",
        description="Which measured point of the gate-passing configs is registered.",
        **_section(BENCHMARK),
    )
    latency_budget_ms: float | None = Field(
        default=None,
        gt=0,
        title="Latency budget (ms)",
        description="p99 per request, for max_throughput_under_latency.",
        **_section(BENCHMARK),
    )
    # The gate (a Great Expectations suite over the per-config metrics; see tasks/stages/compile_pipeline/gate.py).
    top5_tolerance_pp: float = Field(
        default=1.0,
        ge=0,
        le=100,
        title="Top-5 tolerance (pp)",
        description="Largest top-5 accuracy drop vs the CPU baseline that passes the gate.",
        **_section(GATE),
    )
    top1_tolerance_pp: float = Field(
        default=2.0,
        ge=0,
        le=100,
        title="Top-1 tolerance (pp)",
        description="Largest top-1 accuracy drop vs the CPU baseline that passes the gate.",
        **_section(GATE),
    )
    # Agreement with the CPU model where it matters: a good bf16 or int8 keeps the top class of nearly every photo
    # and moves its probability little; a quantiser that flattens the scores keeps the ranking and moves it far.
    min_top1_agreement: float = Field(
        default=0.9,
        ge=0,
        le=1,
        title="Minimum top-1 agreement",
        description="Share of samples whose top class is the CPU baseline's.",
        **_section(GATE),
    )
    min_top1_in_top5: float = Field(
        default=0.99,
        ge=0,
        le=1,
        title="Minimum baseline top-1 in top-5",
        description="Share of samples whose baseline top class is among the compiled model's top 5.",
        **_section(GATE),
    )
    max_top1_probability_shift: float = Field(
        default=0.1,
        ge=0,
        le=1,
        title="Largest top-1 probability shift",
        description="Mean absolute change of the probability of each sample's baseline top class: scores that "
        "keep the ranking but flatten (a cat from 0.79 to 0.42) fail.",
        **_section(GATE),
    )
    # Top-5 *set* equality measures the order of classes at fractions of a percent, not accuracy (bf16 itself
    # reorders that tail): reported, and judged only where a run asks for it.
    min_top5_agreement: float = Field(
        default=0.0,
        ge=0,
        le=1,
        title="Minimum top-5 agreement",
        description="Share of samples whose top-5 classes equal the baseline's (as sets); 0: information only.",
        **_section(GATE),
    )
    min_cosine: float = Field(
        default=0.99,
        ge=-1,
        le=1,
        title="Minimum cosine",
        description="For outputs that are not class scores: lowest per-sample cosine similarity to the baseline "
        "that passes the gate.",
        **_section(GATE),
    )
    min_neighbour_recall: float = Field(
        default=0.9,
        ge=0,
        le=1,
        title="Minimum neighbour recall",
        description="For embeddings (one vector per sample, not class scores): recall@5 against the baseline, the "
        "mean share of each sample's 5 nearest neighbours (by cosine) among the compiled model's embeddings that are "
        "among the baseline's 5.",
        **_section(GATE),
    )
    atol: float = Field(
        default=1e-2,
        ge=0,
        title="Absolute tolerance",
        description="For outputs that are not class scores: every value must be within atol or within rtol "
        "(relative, |a-b| / (|b| + 1e-6)) of the baseline's.",
        **_section(GATE),
    )
    rtol: float = Field(default=5e-2, ge=0, title="Relative tolerance", **_section(GATE))
    dataset: str = Field(
        "builtin:photos",
        title="Validation data",
        description="builtin:photos, builtin:digits, builtin:text, builtin:sentences, a .npz file (inputs, labels), "
        'a .txt (one text per line) or .jsonl ({"text": ...} per line) file of texts for a model that takes '
        "tokens, or a directory of photos with labels.csv (file, label[, label ...]).",
        **_section(DATA),
    )
    calibration_samples: int = Field(
        default=300,
        ge=1,
        le=5000,
        title="Calibration samples",
        description="int8 calibration inputs, never drawn from the validation samples: built-in photos from "
        "scikit-image and scikit-learn photos not used for validation, the digits' training part, a .npz "
        "file's calibration__<input> arrays, a text file's <name>.calibration.txt or <name>.calibration.jsonl beside it.",
        **_section(DATA),
    )
    calibration_method: Literal["NNCF", "Dynamic", "MinMax", "Entropy", "Percentile"] = Field(
        "NNCF",
        title="ONNX Runtime int8 quantiser",
        description="NNCF: NNCF's post-training quantisation with fast bias correction, written for ONNX Runtime's "
        "int8 kernels (for a model that takes tokens, NNCF's transformer recipe). Dynamic: ONNX Runtime's dynamic "
        "quantisation (int8 weights, activations scaled at run time, no calibration data). MinMax, Entropy, "
        "Percentile: ONNX Runtime's own static quantiser with that calibration (without bias correction, which "
        "depthwise convolutions need; Entropy and Percentile calibrate much longer than MinMax).",
        **_section(DATA),
    )
    compile_timeout_s: int = Field(default=1800, ge=1, title="Compile time limit (s)", **_section(LIMITS))
    compile_memory_mb: int = Field(default=16384, ge=256, title="Compile memory limit (MiB)", **_section(LIMITS))
    compile_cache: bool = Field(True, title="Use the compile cache", **_section(LIMITS))
    neuron_pipeline_cores: int | None = Field(
        default=None,
        ge=0,
        le=64,
        title="Neuron inf1 pipeline cores",
        description="NeuronCores one inf1 model is pipelined over; empty: 4 x round(weights / 2e7).",
        **_section(TARGETS),
    )

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, value: str) -> str:
        return check_safe_name(value, "model_name")

    @model_validator(mode="after")
    def _budget_for_the_latency_strategy(self) -> PipelineParams:
        if self.selection == "max_throughput_under_latency" and self.latency_budget_ms is None:
            raise ValueError("selection max_throughput_under_latency needs latency_budget_ms (p99 per request, ms)")
        return self

    @model_validator(mode="after")
    def _buckets_within_the_sequence_length(self) -> PipelineParams:
        bad = [b for b in self.sequence_buckets if b < 1 or b > (self.sequence_length or b)]
        if bad:
            raise ValueError(
                f"sequence_buckets {bad} must be between 1 and sequence_length {self.sequence_length} (the longest "
                "bucket)"
            )
        return self

    @property
    def buckets(self) -> list[int]:
        """Sequence lengths a static-shape target compiles, shortest first; empty without buckets."""
        if not self.sequence_buckets:
            return []
        return sorted({*self.sequence_buckets, *([self.sequence_length] if self.sequence_length else [])})

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        bad = [b for b in value if b < 1 or b > 1024]
        if bad:
            raise ValueError(f"batch sizes must be between 1 and 1024, got {bad}")
        return sorted(set(value))


# What a model_exported event (a retrain) may set of compile_pipeline's params: how to compile, judge and measure,
# never which code runs (trust_model_code, the model, its framework or architecture: the event names the model).
EVENT_PARAMS = frozenset(
    {
        "hf_task", "sequence_length", "sequence_buckets", "input_specs", "targets", "precisions", "batch_sizes",
        "max_concurrency", "benchmark_window_s", "selection", "latency_budget_ms", "top5_tolerance_pp",
        "top1_tolerance_pp", "min_top1_agreement", "min_top1_in_top5", "max_top1_probability_shift",
        "min_top5_agreement", "min_cosine", "min_neighbour_recall", "atol", "rtol", "dataset",
        "calibration_samples", "calibration_method", "compile_timeout_s", "compile_memory_mb", "compile_cache",
        "neuron_pipeline_cores",
    }
)  # fmt: skip


def check_event_params(compile_params: dict) -> dict:
    """``compile_params`` if an event may set every one of them; else a ValueError naming the others."""
    refused = sorted(set(compile_params) - EVENT_PARAMS)
    if refused:
        raise ValueError(
            f"compile_params {refused} cannot come from a model_exported event: an event sets how a model is compiled "
            f"and judged, never what code runs or which model (allowed: {', '.join(sorted(EVENT_PARAMS))})"
        )
    return compile_params


class RetrainParams(Record):
    """The retrain_to_deploy DAG's params."""

    model_name: str = Field("keras-digits", title="Model name", json_schema_extra={"pattern": SAFE_NAME.pattern})
    training_callable: str = Field(
        "builtin:keras_digits",
        min_length=1,
        title="Trainer",
        description="builtin:keras_digits, or module:function called with an output directory and returning the "
        "SavedModel directory it wrote.",
    )
    trust_training_code: bool = Field(
        False,
        title="Trust the trainer's code",
        description="Needed for a module:function trainer outside TRUSTED_CODE_MODULES: importing it runs its code.",
    )
    compile_params: dict = Field(
        default_factory=lambda: {"dataset": "builtin:digits", "batch_sizes": [1, 8, 32]},
        title="Compile params",
        description="compile_pipeline params for the runs this retrain triggers (how to compile and judge; never "
        "trust_model_code or the model).",
    )

    @field_validator("compile_params")
    @classmethod
    def _only_event_params(cls, value: dict) -> dict:
        return check_event_params(value)

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, value: str) -> str:
        return check_safe_name(value, "model_name")


class PromoteParams(Record):
    """The promote_model DAG's params."""

    model_name: str = Field(
        "",
        title="Model name",
        description="Registered model to promote; empty: every champion not promoted yet.",
        json_schema_extra={"pattern": f"^({SAFE_NAME.pattern[1:-1]})?$"},
    )
    version: str = Field(
        "champion",
        min_length=1,
        title="Version or alias",
        description="An approved version number of the model, or an alias of <model>.approved.",
    )
    rollback_to: int | None = Field(
        None,
        ge=1,
        title="Roll back to serving version",
        description="Point serving back to this committed S3 version instead of promoting.",
    )
