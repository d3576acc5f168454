"""Predictions of the CPU baseline and of each compiled config on exactly the same samples, and how they compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core.batching import VALIDATION_BATCH, run_batched
from tasks.core.files import local_path, to_uri, verify_artifact
from tasks.core.records import (
    BaselineResult,
    ClassScore,
    CompiledArtifact,
    DatasetRef,
    ExportedModel,
    Predictions,
    Status,
    ValidationResult,
)
from tasks.datasets import prepare as datasets
from tasks.sources.export import load_reference
from tasks.validation.metrics import accuracy, closeness, softmax, top_k


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
    if artifact.status != Status.OK:
        return ValidationResult(config=config, status=Status.SKIPPED, reason=f"not compiled: {artifact.reason}")
    try:
        verify_artifact(artifact)
        target = targets.get(config.target)
        batch_size = config.batch_size or VALIDATION_BATCH
        data = datasets.load(dataset_ref)
        outputs = run_batched(target.load(artifact, batch_size), data, batch_size)
        reference = np.load(local_path(baseline.predictions.outputs_uri))
        if outputs.shape != reference.shape:
            raise ValueError(f"outputs are shaped {outputs.shape}, the baseline's {reference.shape}")
        nonfinite = int((~np.isfinite(outputs)).sum())
        if nonfinite:  # measured, not raised: the gate's no-NaN expectation names the count
            return ValidationResult(config=config, status=Status.OK, nonfinite_outputs=nonfinite)
        predictions = summarise(outputs, data, Path(out_dir) / f"{config.key}.outputs.npy")
    except Exception as exc:
        return ValidationResult(config=config, status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}")
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
        status=Status.OK,
        predictions=predictions,
        top1_delta=round(100 * (predictions.top1 - base.top1), 4) if labelled else None,
        top5_delta=round(100 * (predictions.top5 - base.top5), 4) if labelled else None,
        top5_agreement=agreement,
        **closeness(outputs, reference, atol, rtol),
    )
