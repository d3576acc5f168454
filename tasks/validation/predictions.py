"""Predictions of the CPU baseline and of each compiled config on exactly the same samples, and how they compare."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasks import targets
from tasks.core import store
from tasks.core.batching import VALIDATION_BATCH, match_outputs, run_batched
from tasks.core.figures import ValidationResult
from tasks.core.files import file_ref, local_path
from tasks.core.records import CompiledArtifact, DatasetRef, ExportedModel, FileRef, Status
from tasks.core.results import BaselineResult, ClassScore, Predictions
from tasks.core.store import artifact_dir, fetch
from tasks.datasets import bind
from tasks.datasets import prepare as datasets
from tasks.sources.export import load_reference
from tasks.validation.metrics import accuracy, compare_output, label_deltas, softmax


def save_outputs(outputs: dict[str, np.ndarray], path: Path) -> FileRef:
    """Every output by name in one ``.npz`` file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:  # np.savez given a path would append .npz to a name without it
        np.savez(file, **{name: value.astype(np.float32) for name, value in outputs.items()})
    return file_ref(path)


def load_outputs(predictions: Predictions) -> dict[str, np.ndarray]:
    """The outputs :func:`save_outputs` wrote, by name, in the model's order (fetched, checked by sha256)."""
    with np.load(fetch(predictions.outputs_ref)) as saved:
        return {name: saved[name] for name in saved.files}


def publish_outputs(predictions: Predictions | None, uri: str) -> Predictions | None:
    """``predictions`` with their outputs file put in the run store at ``uri``."""
    if predictions is None:
        return None
    published = store.publish(predictions.outputs_ref, uri)
    local_path(predictions.outputs_uri).unlink(missing_ok=True)  # this host's copy: the store's is the record's
    return predictions.model_copy(update={"outputs_uri": published.uri})


def summarise(outputs: dict[str, np.ndarray], data: datasets.LoadedDataset, out_path: Path) -> Predictions:
    """Outputs saved; accuracy of the class-score output where the data is labelled."""
    for name, values in outputs.items():
        if not np.isfinite(values).all():
            raise ValueError(f"model output {name!r} contains NaN or Inf ({int((~np.isfinite(values)).sum())} values)")
    saved = save_outputs(outputs, out_path)
    uri, sha256 = saved.uri, saved.sha256
    samples = len(next(iter(outputs.values())))
    judged = None
    if data.labels is not None:  # the output the labels judge (checked to exist when the dataset was prepared)
        widths = {name: values.shape[1] if values.ndim == 2 else None for name, values in outputs.items()}
        judged = bind.class_output(widths, None if data.class_names is None else len(data.class_names))
    if judged is None:
        return Predictions(outputs_uri=uri, outputs_sha256=sha256, samples=samples)
    scores = outputs[judged]
    classes = scores.shape[1]
    probe_top5 = []
    if data.class_names is not None:
        probe = softmax(scores[data.probe_index : data.probe_index + 1])[0]
        probe_top5 = [
            ClassScore(class_id=int(c), name=data.class_names[int(c)], probability=round(float(probe[c]), 4))
            for c in np.argsort(-probe, kind="stable")[:5]
        ]
    return Predictions(
        outputs_uri=uri,
        outputs_sha256=sha256,
        samples=samples,
        class_output=judged,
        top1=accuracy(scores, data.labels, 1),
        top5=accuracy(scores, data.labels, min(5, classes)),
        probe_top5=probe_top5,
    )


def baseline_predictions(exported: ExportedModel, dataset_ref: DatasetRef, out_dir: str | Path) -> Predictions:
    """Run the source framework itself over the validation set once; compiled configs compare against it."""
    data = datasets.load(dataset_ref)
    outputs = run_batched(load_reference(exported), data, VALIDATION_BATCH)
    outputs = match_outputs(outputs, [s.name for s in exported.outputs], f"the {exported.framework} baseline")
    return summarise(outputs, data, Path(out_dir) / "baseline.outputs.npz")


def in_bucket(
    data: datasets.LoadedDataset, reference: dict[str, np.ndarray], length: int
) -> tuple[datasets.LoadedDataset, dict[str, np.ndarray]]:
    """The samples that fit a static-shape bucket of ``length`` tokens, and the baseline's outputs for them. An
    output with a sequence axis (hidden states) is cut to the bucket: the padding it drops was masked out of
    attention, so the baseline's figures for the real tokens are the same."""
    stored = data.sequence_length
    fitting, indices = data.fitting(length)
    if not len(fitting):
        tokens = data.arrays[datasets.ATTENTION_MASK].sum(axis=1)
        raise ValueError(
            f"no validation sample fits the {length}-token bucket (the shortest has {int(tokens.min())} tokens): "
            "give shorter texts or drop the bucket"
        )
    cut = {
        name: values[indices][:, :length] if values.ndim >= 3 and values.shape[1] == stored else values[indices]
        for name, values in reference.items()
    }
    return fitting, cut


def validate_artifact(
    artifact: CompiledArtifact,
    dataset_ref: DatasetRef,
    baseline: BaselineResult,
    out_dir: str | Path,
    atol: float = 1e-2,
    rtol: float = 5e-2,
) -> ValidationResult:
    """Compare every output of one compiled config with the baseline's; a failure is ``failed`` with its reason."""
    config = artifact.config
    if artifact.status != Status.OK:
        return ValidationResult(config=config, status=Status.SKIPPED, reason=f"not compiled: {artifact.reason}")
    base = baseline.predictions
    try:
        artifact_dir(artifact)  # fetched and checked against its sha256 before anything runs
        target = targets.get(config.target)
        batch_size = config.batch_size or VALIDATION_BATCH
        data = datasets.load(dataset_ref)
        reference = load_outputs(base)
        if config.sequence_length:
            data, reference = in_bucket(data, reference, config.sequence_length)
        outputs = match_outputs(
            run_batched(target.load(artifact, batch_size), data, batch_size), list(reference), config.key
        )
        checks = [
            compare_output(
                name, outputs[name], reference[name], atol, rtol, name == base.class_output, groups=data.groups
            )
            for name in reference
        ]
        if any(check.nonfinite for check in checks):
            return ValidationResult(config=config, status=Status.OK, outputs=checks)
        predictions = summarise(outputs, data, Path(out_dir) / f"{config.key}.outputs.npz")
    except Exception as exc:
        return ValidationResult(config=config, status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}")
    base_top1 = base_top5 = None
    if base.class_output is not None and predictions.top5 is not None:
        base_top1, base_top5 = base.top1, base.top5
        if predictions.samples != base.samples:  # a bucket's fitting samples: the baseline on those same samples
            scores = reference[base.class_output]
            base_top1 = accuracy(scores, data.labels, 1)
            base_top5 = accuracy(scores, data.labels, min(5, scores.shape[1]))
        scores, base_scores = outputs[base.class_output], reference[base.class_output]
        deltas = label_deltas(scores, base_scores, data.labels, data.groups, (predictions.top1, predictions.top5),
                              (base_top1, base_top5))  # fmt: skip
        intervals = deltas.pop("intervals")
        checks = [
            check.model_copy(update={**deltas, "intervals": {**check.intervals, **intervals}})
            if check.class_scores
            else check
            for check in checks
        ]
    return ValidationResult(
        config=config,
        status=Status.OK,
        predictions=predictions,
        outputs=checks,
        truncated_share=dataset_ref.truncated_share,
        baseline_top1=base_top1,
        baseline_top5=base_top5,
    )
