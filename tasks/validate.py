"""Validate stage: the CPU baseline and each compiled config on exactly the same samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import dataset as datasets
from tasks import targets
from tasks.compile import verify
from tasks.export import load_exported_pytorch
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


def run_batched(predict: Predict, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Outputs for all ``inputs``; the last batch is padded (fixed-shape models need full batches)."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - real, axis=0)])
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


def summarise(logits: np.ndarray, data: datasets.LoadedDataset, probe_photo: str, out_path: Path) -> Predictions:
    if not np.isfinite(logits).all():
        raise ValueError(f"model outputs contain NaN or Inf ({int((~np.isfinite(logits)).sum())} values)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, logits.astype(np.float32))
    probe = softmax(logits[data.probe_index[probe_photo] : data.probe_index[probe_photo] + 1])[0]
    names = datasets.class_names()
    return Predictions(
        outputs_uri=to_uri(out_path),
        samples=len(logits),
        top1=accuracy(logits, data.labels, 1),
        top5=accuracy(logits, data.labels, 5),
        probe_top5=[
            ClassScore(class_id=int(c), name=names[int(c)], probability=round(float(probe[c]), 4))
            for c in np.argsort(-probe, kind="stable")[:5]
        ],
    )


def baseline_predictions(exported: ExportedModel, dataset_ref: DatasetRef, out_dir: str | Path) -> Predictions:
    """Run the framework model itself over the validation set once; compiled configs compare against it."""
    import torch

    model = load_exported_pytorch(exported)
    data = datasets.load(dataset_ref)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    logits = run_batched(predict, data.inputs(), VALIDATION_BATCH)
    return summarise(logits, data, dataset_ref.probe_photo, Path(out_dir) / "baseline.outputs.npy")


def validate_artifact(
    artifact: CompiledArtifact, dataset_ref: DatasetRef, baseline: BaselineResult, out_dir: str | Path
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
        logits = run_batched(target.load(artifact, batch_size), data.inputs(), batch_size)
        predictions = summarise(logits, data, dataset_ref.probe_photo, Path(out_dir) / f"{config.key}.outputs.npy")
    except Exception as exc:
        return ValidationResult(config=config, status="failed", reason=f"{type(exc).__name__}: {exc}")
    reference = np.load(local_path(baseline.predictions.outputs_uri))
    agreement = np.mean(
        [set(a) == set(b) for a, b in zip(top_k(reference).tolist(), top_k(logits).tolist(), strict=True)]
    )
    base = baseline.predictions
    return ValidationResult(
        config=config,
        status="ok",
        predictions=predictions,
        top1_delta=round(100 * (predictions.top1 - base.top1), 4),
        top5_delta=round(100 * (predictions.top5 - base.top5), 4),
        top5_agreement=float(agreement),
        max_abs_diff=float(np.abs(logits - reference).max()),
    )
