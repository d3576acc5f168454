"""The small typed records that flow between stages (through XCom as JSON).

They carry URIs, checksums and figures, never tensors or model bytes.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.core import settings as settings_module
from tasks.targets.registry import TARGET_MODULES

# Names that become S3 keys, paths and registered-model names.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_safe_name(value: str, what: str) -> str:
    """``value``, if it can be an S3 key segment or a directory name as it is; else a ValueError naming ``what``."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(
            f"{what} {value!r} must be 1-128 letters, digits, '.', '_' or '-', start with a letter or digit and "
            "not contain '..' (it becomes an S3 key and a path)"
        )
    return value


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict:
        return self.model_dump(mode="json")


class TensorSpec(Record):
    name: str
    shape: list[int | str]  # a string is a symbolic (dynamic) dimension; the first one is the batch axis
    dtype: str  # numpy dtype name: float32, int64, ...

    @property
    def batch_axis(self) -> int | None:
        return next((i for i, dim in enumerate(self.shape) if isinstance(dim, str)), None)


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
        # judge a point as well as three of 1 s did (devtools.bench's careful grid checks the pick), in half the time
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
    # Agreement with the CPU model where it matters. Measured on MobileNetV2 and the built-in photos (249 samples):
    # OpenVINO bf16 0.984 / 1.0 / 0.012, NNCF int8 0.94 / 1.0 / 0.04, ONNX Runtime MinMax int8 0.79 / 0.99 / 0.15.
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
    # Top-5 *set* equality measures the order of classes at 0.2 % probability, not accuracy (bf16 itself reaches
    # only 0.88 on MobileNetV2): reported, and judged only where a run asks for it.
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
        description="builtin:photos, builtin:digits, builtin:text, a .npz file (inputs, labels), "
        "or a directory of photos with labels.csv (file, label[, label ...]).",
        **_section(DATA),
    )
    calibration_samples: int = Field(
        default=300,
        ge=1,
        le=5000,
        title="Calibration samples",
        description="int8 calibration inputs, never drawn from the validation samples: built-in photos from "
        "scikit-image and scikit-learn photos not used for validation, the digits' training part, a .npz "
        "file's calibration__<input> arrays, a text file's <name>.calibration.txt beside it.",
        **_section(DATA),
    )
    calibration_method: Literal["NNCF", "Dynamic", "MinMax", "Entropy", "Percentile"] = Field(
        "NNCF",
        title="ONNX Runtime int8 quantiser",
        description="NNCF: NNCF's post-training quantisation with fast bias correction, written for ONNX Runtime's "
        "int8 kernels (for a model that takes tokens, NNCF's transformer recipe). Dynamic: ONNX Runtime's dynamic "
        "quantisation (int8 weights, activations scaled at run time, no calibration data). MinMax, Entropy, "
        "Percentile: ONNX Runtime's own static quantiser with that calibration (on MobileNetV2 none of the three "
        "keeps top-1 agreement; Entropy and Percentile take about 8x longer).",
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


class RunContext(Record):
    """What every stage of one run is given: its id, its prefix in the run store, its params."""

    run_id: str
    run_uri: str  # <RUN_STORE_URI>/<run>: where the run's stages put what they hand on (tasks.core.store)
    params: PipelineParams

    @property
    def safe_id(self) -> str:
        return safe_run_id(self.run_id)

    def scratch(self, *parts: str) -> Path:
        """This host's own working directory for the run (never read by another host)."""
        return settings_module.load().scratch_dir.joinpath(self.safe_id, *parts)


def safe_run_id(run_id: str) -> str:
    """A run id as one path segment or key part (Airflow's run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("._") or "run"


class FileRef(Record):
    """An object in the run store (or, inside one stage, a local file): where it is and what it holds."""

    uri: str
    sha256: str  # a directory's is its tree's (tasks.core.files.tree_sha256)
    size: int = 0
    tree: bool = False  # a directory (a prefix of objects), not one file


class ExportedModel(Record):
    name: str
    framework: str
    architecture: str  # "" where the source is not rebuilt from an architecture; Hugging Face: model type and task
    source_uri: str
    source_sha256: str
    parameters: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    formats: dict[str, FileRef]  # e.g. {"exported_program": ..., "onnx": ...}; a directory's sha256 is its tree's
    flops_per_sample: int | None = None  # multiply-adds x 2 of Conv/Gemm/MatMul in the ONNX graph, at batch 1
    # What turned the source into the formats: the exporter code's sha256 and its libraries' versions (the report
    # shows them; the compile cache keys on graph_sha256, what the exporter made).
    exporter: dict[str, str] = {}
    # Each format's graph and weights as the compilers read them (tasks.sources.graph_digest): what the compile
    # cache keys on, so a changed architecture anywhere upstream is a miss.
    graph_sha256: dict[str, str] = {}
    # What code from the model file runs when it is loaded, on the user's opt-in; "" for none (weights and graphs).
    model_code: str = ""


class CompileConfig(Record):
    target: str
    precision: str
    batch_size: int | None = None  # None: the artifact accepts any batch size
    pipeline_cores: int | None = None  # Neuron inf1 pipeline mode; None: the pipelining guide's default
    # Accuracy-aware int8: the largest loss of the gate's own figures, on the calibration inputs, that the quantiser
    # may leave before it keeps layers in higher precision ({"top1_probability_shift": .., "cosine": ..}), and the
    # output labels judge (set by the compile stage from the dataset: class scores, else every output by cosine).
    quantiser_tolerance: dict[str, float] = Field(default_factory=dict)
    judged_output: str | None = None
    calibration_method: str | None = None  # ONNX Runtime int8: NNCF (None too), MinMax, Entropy or Percentile
    sequence_length: int | None = None  # a static-shape target's bucket; None: the export's own length

    @property
    def key(self) -> str:
        """Readable, unique name of the config, e.g. ``openvino-bf16`` or ``neuron-inf1-fp32-bs8``."""
        suffix = f"-bs{self.batch_size}" if self.batch_size else ""
        suffix += f"-seq{self.sequence_length}" if self.sequence_length else ""
        suffix += f"-pc{self.pipeline_cores}" if self.pipeline_cores is not None else ""
        return f"{self.target}-{self.precision}{suffix}"


class Status(StrEnum):
    """How a stage ended for one subject (a config, a target), as Model Navigator's CommandStatus says it."""

    OK = "ok"
    FAILED = "failed"  # it ran and did not succeed; the reason says why
    SKIPPED = "skipped"  # it did not run: nothing to do, or what it needs is missing; the reason says which


class Outcome(Record):
    """One stage's answer for one subject where there is no richer record: e.g. a target the plan skipped."""

    subject: str
    status: Status
    reason: str = ""


class Plan(Record):
    configs: list[CompileConfig]
    skipped: list[Outcome] = Field(default_factory=list)  # targets that cannot compile this model here, and why


class Fingerprint(Record):
    """What a target's output depends on besides the model: part of the compile-cache key."""

    compiler: str
    compiler_version: str
    flags: list[str] = Field(default_factory=list)
    source_format: str  # which of ExportedModel.formats the target compiles from


class NamedFile(Record):
    name: str  # path inside the compiled artifact
    sha256: str
    size: int


class CompileReport(Record):
    """What the compiler did: where the operators run, with which flags, which device binaries it made."""

    compiler: str
    compiler_version: str
    flags: list[str] = Field(default_factory=list)
    device: str = "CPU"  # where the compiled operators run
    operators_total: int | None = None  # operators in the graph given to the compiler
    operators_on_device: int | None = None  # of those, placed on the device
    device_binaries: list[NamedFile] = Field(default_factory=list)  # e.g. Neuron NEFF files
    notes: list[str] = Field(default_factory=list)

    @property
    def on_device_share(self) -> float | None:
        if not self.operators_total or self.operators_on_device is None:
            return None
        return self.operators_on_device / self.operators_total


CacheStatus = Literal["off", "miss", "hit", "rebuilt"]


class CompiledArtifact(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    uri: str = ""  # directory holding the compiled model files
    sha256: str = ""  # over the directory's files (see tasks.core.files.tree_sha256)
    files: list[str] = Field(default_factory=list)
    compiler: str = ""
    compiler_version: str = ""
    report: CompileReport | None = None
    compile_seconds: float = 0.0  # compiler wall time (for a cache hit: of the compile that made the entry)
    peak_memory_mb: float = 0.0  # peak resident memory of the compiler process tree
    stage_seconds: float = 0.0  # wall time of this compile stage, cache lookups included
    cache: CacheStatus = "off"  # rebuilt: the cache entry failed its sha256 check and was compiled again
    cache_key: str = ""
    log_uri: str = ""
    log_sha256: str = ""
    host: str = ""  # the worker that compiled it (or took it from the compile cache)

    @property
    def ref(self) -> FileRef:
        """The compiled files as one object of the run store (a tree)."""
        return FileRef(uri=self.uri, sha256=self.sha256, tree=True)

    @property
    def log_ref(self) -> FileRef | None:
        return FileRef(uri=self.log_uri, sha256=self.log_sha256) if self.log_uri and self.log_sha256 else None


class DatasetRef(Record):
    uri: str
    sha256: str
    name: str
    samples: int
    inputs: list[str]  # array names in the file, matched to the model's inputs
    labelled: bool  # whether samples carry class labels (top-k accuracy) or only outputs are compared
    sources: list[str] = Field(default_factory=list)  # e.g. the photos the samples were cut from
    probe: str = ""  # the sample whose top-5 the summary shows side by side
    calibration_uri: str = ""  # int8 calibration inputs, never the validation samples
    calibration_sha256: str = ""
    calibration_samples: int = 0
    class_output: str | None = None  # the output the labels judge; None for unlabelled data
    calibration_sources: list[str] = Field(default_factory=list)  # where the calibration inputs come from
    sequence_length: int | None = None  # text: the tokens per sample, and how many samples were cut to it
    truncated_samples: int = 0

    @property
    def truncated_share(self) -> float:
        return self.truncated_samples / self.samples if self.samples else 0.0

    @property
    def ref(self) -> FileRef:
        return FileRef(uri=self.uri, sha256=self.sha256)

    @property
    def calibration_ref(self) -> FileRef | None:
        return FileRef(uri=self.calibration_uri, sha256=self.calibration_sha256) if self.calibration_uri else None


class ClassScore(Record):
    class_id: int
    name: str
    probability: float


class Predictions(Record):
    """Accuracy of one model over the validation set (where labelled), outputs kept in a file."""

    outputs_uri: str  # .npz, one array per output name
    samples: int
    outputs_sha256: str = ""
    class_output: str | None = None  # the output judged by top-k against the labels (None: no labels)
    top1: float | None = None
    top5: float | None = None
    probe_top5: list[ClassScore] = Field(default_factory=list)

    @property
    def outputs_ref(self) -> FileRef:
        return FileRef(uri=self.outputs_uri, sha256=self.outputs_sha256)


class BenchmarkPoint(Record):
    batch_size: int
    concurrency: int = 1  # streams with a request in flight, over all copies
    copies: int = 1  # model copies, each a process pinned to its own device cores (Neuron); else 1
    throughput: float  # samples per second, over the final (agreeing) windows
    latency_ms_p50: float  # of one request (one batch)
    latency_ms_p90: float
    latency_ms_p99: float
    iterations: int  # requests in the final windows
    windows: int = 0  # measurement windows run, warm-up excluded
    spread: float = 0.0  # (max - min) / mean throughput of the final windows
    stable: bool = True  # False: the windows never agreed within the harness's limit
    stopped_early: bool = False  # its first windows were clearly under the sweep's best: measured no further
    device: str = "CPU"
    utilisation: list[float] = Field(default_factory=list)  # percent per CPU core, GPU or NeuronCore
    visible_cores: list[str] = Field(default_factory=list)  # per copy, as its process saw them (e.g. "0-3")
    # the runtime's settings the point ran with, to be written into the serving config where it won
    # (OpenVINO: PERFORMANCE_HINT, NUM_STREAMS); empty where the runtime has no such mode
    runtime: dict[str, str] = Field(default_factory=dict)

    @property
    def summary(self) -> str:
        """e.g. ``812.3 samples/s at batch 8 x 4 streams, p99 12.1 ms``."""
        stability = "" if self.stable else f", unstable (spread {self.spread:.0%})"
        stability += ", stopped early under the best" if self.stopped_early else ""
        return f"{self.throughput:.1f} samples/s at batch {self.shape}, p99 {self.latency_ms_p99:.1f} ms{stability}"

    @property
    def shape(self) -> str:
        """e.g. ``8 x 4 streams`` or ``8 x 4 copies x 2 streams``."""
        if self.copies > 1 or self.visible_cores:
            return f"{self.batch_size} x {self.copies} copies x {self.concurrency // self.copies} streams"
        return f"{self.batch_size} x {self.concurrency} streams"


class MachineContext(Record):
    """Where a benchmark ran, and what that machine can do at most (a dense matmul's GFLOP/s)."""

    host: str
    cpu_model: str
    cores_physical: int
    cores_logical: int
    peak_gflops: dict[str, float] = Field(default_factory=dict)  # e.g. {"fp32": 180.2, "bf16": 610.5}


class BenchmarkResult(Record):
    subject: str  # config key, or "baseline"
    status: Status
    reason: str = ""
    points: list[BenchmarkPoint] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)  # why each sweep stopped, points that failed
    machine: MachineContext | None = None
    seconds: float = 0.0  # wall time of the whole sweep, loading and racing included
    waited_s: float = 0.0  # waiting for the host's other sweep or validations to end (tasks.benchmark.host_lock)

    @property
    def best(self) -> BenchmarkPoint | None:
        return max(self.points, key=lambda p: p.throughput, default=None)

    @property
    def naive(self) -> BenchmarkPoint | None:
        """Single stream at the smallest batch measured: what an untuned deployment gets."""
        single = [p for p in self.points if p.concurrency == 1]
        return min(single, key=lambda p: p.batch_size, default=None)


class BaselineResult(Record):
    """The source framework on the CPU of one host class's hosts: the reference its configs are judged against and
    the throughput their speedups divide by."""

    framework: str
    predictions: Predictions
    benchmark: BenchmarkResult
    host_class: str = "cpu"


# How an output is judged, by what it is (tasks.validation.metrics.output_rule).
OUTPUT_RULES = {
    "class scores": "top-k against the labels, and agreement with the baseline's top class",
    "embedding": "retrieval against the baseline's neighbours (recall@5), and cosine",
    "values": "absolute and relative error (a scalar or a few values per sample: cosine says nothing there)",
    "tensor": "cosine per sample, and absolute and relative error",
}


class OutputCheck(Record):
    """One output of a compiled config against the same output of the baseline, on the same samples."""

    name: str
    class_scores: bool = False  # judged by top-k against the labels (Predictions.class_output)
    top1_delta: float | None = None  # percentage points, compiled - baseline (class scores only)
    top5_delta: float | None = None
    top5_agreement: float | None = None  # share of samples whose top-5 set equals the baseline's (information)
    top1_agreement: float | None = None  # share of samples whose top class is the baseline's
    top1_in_top5: float | None = None  # share of samples whose baseline top class is in the compiled top 5
    top1_probability_shift: float | None = None  # mean |change| of the baseline top class's probability
    nonfinite: int = 0  # NaN or Inf values; where > 0 the closeness figures are None
    cosine_min: float | None = None  # lowest per-sample cosine similarity to the baseline's
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None  # |a - b| / (|b| + eps), so zero outputs do not divide by zero
    out_of_tolerance: float | None = None  # share of values off by more than atol AND by more than rtol
    # Embeddings (one vector per sample, not class scores): recall@5 of each sample's nearest neighbours against
    # the baseline's (mean share kept), and the mean rank correlation of each sample's similarities (information)
    neighbour_recall: float | None = None
    similarity_rank_correlation: float | None = None
    constant: bool = False  # the same value for every sample: nothing a model computes from its input
    rule: str = ""  # which rule judged it (OUTPUT_RULES)
    # 95 % interval of each figure above that has one, by its name: a paired bootstrap over the samples' sources
    # (tasks.validation.uncertainty); absent where the samples come from one source only
    intervals: dict[str, tuple[float, float]] = {}


class ValidationResult(Record):
    config: CompileConfig
    status: Status
    reason: str = ""
    predictions: Predictions | None = None
    outputs: list[OutputCheck] = Field(default_factory=list)  # every output of the model, in its declared order
    host: str = ""  # the worker that ran the validation
    truncated_share: float = 0.0  # text cut to the sequence length, as a share of the validation samples

    # One-figure summaries (progress lines, tables, the registry's tags) show one output: the class scores
    # where labels judge one, else the first.
    @property
    def primary(self) -> OutputCheck | None:
        return next((c for c in self.outputs if c.class_scores), self.outputs[0] if self.outputs else None)

    @property
    def top1_delta(self) -> float | None:
        return self.primary and self.primary.top1_delta

    @property
    def top5_delta(self) -> float | None:
        return self.primary and self.primary.top5_delta

    @property
    def top5_agreement(self) -> float | None:
        return self.primary and self.primary.top5_agreement

    @property
    def top1_agreement(self) -> float | None:
        return self.primary and self.primary.top1_agreement

    @property
    def cosine_min(self) -> float | None:
        return self.primary and self.primary.cosine_min

    @property
    def max_abs_diff(self) -> float | None:
        return self.primary and self.primary.max_abs_diff

    @property
    def max_rel_diff(self) -> float | None:
        return self.primary and self.primary.max_rel_diff

    @property
    def out_of_tolerance(self) -> float | None:
        return self.primary and self.primary.out_of_tolerance

    @property
    def nonfinite_outputs(self) -> int:
        """NaN or Inf values over every output."""
        return sum(check.nonfinite for check in self.outputs)


class ConfigOutcome(Record):
    """Everything known about one config after compile, validate, benchmark and gate."""

    compiled: CompiledArtifact
    validation: ValidationResult | None = None
    benchmark: BenchmarkResult | None = None
    # "undecided": no expectation failed, but the validation set cannot tell a figure from its threshold
    gate: Literal["pass", "fail", "undecided"] = "fail"
    gate_reasons: list[str] = Field(default_factory=list)
    mlflow_run_id: str = ""


class Gated(Record):
    """The gate's verdict on every config, and its GX validation result and Data Docs in the run store."""

    outcomes: list[ConfigOutcome]
    docs: FileRef | None = None  # a tree: validation_result.json and data_docs/


class Recorded(Record):
    """Where the record task logged the pipeline run, and every config's outcome with its MLflow run id."""

    tracking_uri: str
    experiment: str
    run_id: str
    outcomes: list[ConfigOutcome]


class Registration(Record):
    registered_model: str
    version: str
    alias: str
    model_uri: str
    run_id: str
    config: CompileConfig
    selected: str = ""  # the config key the selection strategy picked
    selected_point: BenchmarkPoint | None = None  # and its measured point


class Promotion(Record):
    uri: str  # s3://bucket/prefix/<model>/<N>/
    endpoint_url: str | None
    manifest_uri: str
    manifest: dict
    version: int = 0  # serving version N
    already_promoted: bool = False  # this registry version was committed earlier; nothing was written
