"""Validate stage: the CPU baseline and each compiled config on exactly the same samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import dataset as datasets
from tasks import targets
from tasks.compile import verify
from tasks.export import load_reference
from tasks.files import local_path, to_uri
from tasks.records import (
    BaselineResult,
    ClassScore,
    CompiledArtifact,
    DatasetRef,
    ExportedModel,
    Predictions,
    ValidationResult,
)
from tasks.targets import Predict

VALIDATION_BATCH = 8
RELATIVE_EPS = 1e-6  # in |a - b| / (|b| + eps): zero reference outputs do not divide by zero


class ArrayInputs:
    """In-memory inputs by name, read like a dataset (``len`` and ``inputs(start, stop)``)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[start:stop]) for k, v in self.arrays.items()}


def run_batched(predict: Predict, data: datasets.LoadedDataset | ArrayInputs, batch_size: int) -> np.ndarray:
    """Outputs for all samples; the last batch is padded (fixed-shape models need full batches)."""
    outputs = []
    for start in range(0, len(data), batch_size):
        batch = data.inputs(start, start + batch_size)
        real = len(next(iter(batch.values())))
        if real < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)]) for k, v in batch.items()}
        outputs.append(np.asarray(predict(batch))[:real])
    return np.concatenate(outputs)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def top_k(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Class ids of the k highest logits per sample, best first (ties broken by class id)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of samples with any correct class (labels: -1 padded sets) among the top k."""
    top = top_k(logits, k)
    hits = [bool(set(row.tolist()) & set(label[label >= 0].tolist())) for row, label in zip(top, labels, strict=True)]
    return float(np.mean(hits))


def closeness(outputs: np.ndarray, reference: np.ndarray, atol: float = 1e-2, rtol: float = 5e-2) -> dict[str, float]:
    """Lowest per-sample cosine similarity, largest absolute and relative differences, and the share
    of values off by more than ``atol`` and, relatively, by more than ``rtol``."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    # two all-zero outputs agree exactly; one zero and one not do not
    cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(np.abs(a - b).max(axis=1) == 0, 1, 0))
    diff = np.abs(a - b)
    relative = diff / (np.abs(b) + RELATIVE_EPS)
    return {
        "cosine_min": float(cosine.min()),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(relative.max()),
        "out_of_tolerance": float(np.mean((diff > atol) & (relative > rtol))),
    }


def summarise(outputs: np.ndarray, data: datasets.LoadedDataset, out_path: Path) -> Predictions:
    if not np.isfinite(outputs).all():
        raise ValueError(f"model outputs contain NaN or Inf ({int((~np.isfinite(outputs)).sum())} values)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, outputs.astype(np.float32))
    if data.labels is None or outputs.ndim != 2:
        return Predictions(outputs_uri=to_uri(out_path), samples=len(outputs))
    classes = outputs.shape[1]
    probe_top5 = []
    if data.class_names is not None:
        if len(data.class_names) != classes:
            raise ValueError(f"the model outputs {classes} class scores, the dataset names {len(data.class_names)}")
        probe = softmax(outputs[data.probe_index : data.probe_index + 1])[0]
        probe_top5 = [
            ClassScore(class_id=int(c), name=data.class_names[int(c)], probability=round(float(probe[c]), 4))
            for c in np.argsort(-probe, kind="stable")[:5]
        ]
    return Predictions(
        outputs_uri=to_uri(out_path),
        samples=len(outputs),
        top1=accuracy(outputs, data.labels, 1),
        top5=accuracy(outputs, data.labels, min(5, classes)),
        probe_top5=probe_top5,
    )


def baseline_predictions(exported: ExportedModel, dataset_ref: DatasetRef, out_dir: str | Path) -> Predictions:
    """Run the source framework itself over the validation set once; compiled configs compare against it."""
    data = datasets.load(dataset_ref)
    outputs = run_batched(load_reference(exported), data, VALIDATION_BATCH)
    return summarise(outputs, data, Path(out_dir) / "baseline.outputs.npy")


def validate_artifact(
    artifact: CompiledArtifact,
    dataset_ref: DatasetRef,
    baseline: BaselineResult,
    out_dir: str | Path,
    atol: float = 1e-2,
    rtol: float = 5e-2,
) -> ValidationResult:
    """Compare one compiled config with the baseline; a failure is a ``failed`` result with its reason."""
    config = artifact.config
    if artifact.status != "ok":
        return ValidationResult(config=config, status="failed", reason=f"not compiled: {artifact.reason}")
    try:
        verify(artifact)
        target = targets.get(config.target)
        batch_size = config.batch_size or VALIDATION_BATCH
        data = datasets.load(dataset_ref)
        outputs = run_batched(target.load(artifact, batch_size), data, batch_size)
        reference = np.load(local_path(baseline.predictions.outputs_uri))
        if outputs.shape != reference.shape:
            raise ValueError(f"outputs are shaped {outputs.shape}, the baseline's {reference.shape}")
        nonfinite = int((~np.isfinite(outputs)).sum())
        if nonfinite:  # measured, not raised: the gate's no-NaN expectation names the count
            return ValidationResult(config=config, status="ok", nonfinite_outputs=nonfinite)
        predictions = summarise(outputs, data, Path(out_dir) / f"{config.key}.outputs.npy")
    except Exception as exc:
        return ValidationResult(config=config, status="failed", reason=f"{type(exc).__name__}: {exc}")
    base = baseline.predictions
    labelled = predictions.top5 is not None and base.top5 is not None
    agreement = None
    if labelled:
        k = min(5, outputs.shape[1])
        agreement = float(
            np.mean(
                [
                    set(a) == set(b)
                    for a, b in zip(top_k(reference, k).tolist(), top_k(outputs, k).tolist(), strict=True)
                ]
            )
        )
    return ValidationResult(
        config=config,
        status="ok",
        predictions=predictions,
        top1_delta=round(100 * (predictions.top1 - base.top1), 4) if labelled else None,
        top5_delta=round(100 * (predictions.top5 - base.top5), 4) if labelled else None,
        top5_agreement=agreement,
        **closeness(outputs, reference, atol, rtol),
    )
