"""Binding a dataset to a model: its arrays keyed by the model's own input names and checked against the model's
input specs, its labels checked against the model's class count, so a mismatch is an error before any compile
starts."""

from __future__ import annotations

import numpy as np

from tasks.core.records import ExportedModel
from tasks.core.schema import TensorSpec
from tasks.datasets.imagenet import preprocess
from tasks.datasets.samples import Samples


def class_output(widths: dict[str, int | None], class_count: int | None) -> str | None:
    """The output labels judge, of outputs by name -> width (None: not shaped (batch, classes)): the first with
    as many classes as the dataset names, or the first of any width where it names none."""
    scores = [name for name, width in widths.items() if width is not None]
    if class_count is None:
        return scores[0] if scores else None
    return next((name for name in scores if widths[name] == class_count), None)


def check_labels(samples: Samples, exported: ExportedModel, what: str) -> str | None:
    """Label range and class count against the model's class-score output, before any model runs; the name of
    that output (None for unlabelled data)."""
    if samples.labels is None:
        return None
    widths = {
        s.name: s.shape[-1] if len(s.shape) == 2 and isinstance(s.shape[-1], int) else None for s in exported.outputs
    }
    class_count = None if samples.class_names is None else len(samples.class_names)
    judged = class_output(widths, class_count)
    if judged is None:
        shapes = ", ".join(f"{s.name} {s.shape}" for s in exported.outputs)
        if class_count is not None and any(widths.values()):
            raise ValueError(f"{what} names {class_count} classes, no output of the model has as many ({shapes})")
        raise ValueError(f"{what} is labelled, but no output of the model is one class score per class ({shapes})")
    classes = widths[judged]
    if (samples.labels < -1).any() or (samples.labels >= classes).any():
        bad = sorted({int(v) for v in samples.labels.ravel() if v < -1 or v >= classes})[:5]
        raise ValueError(f"{what}: labels must be class ids 0..{classes - 1} (-1 pads label sets); found {bad}")
    if (samples.labels.max(axis=1) < 0).any():
        raise ValueError(f"{what}: {int((samples.labels.max(axis=1) < 0).sum())} samples have no label")
    return judged


def _bind(arrays: dict[str, np.ndarray], specs: list[TensorSpec], what: str, preprocess_kind: str) -> dict:
    """Arrays keyed by the model's input names, checked against the input specs."""
    if set(arrays) == {s.name for s in specs}:
        bound = {s.name: arrays[s.name] for s in specs}
    elif len(arrays) == 1 and len(specs) == 1:
        bound = {specs[0].name: next(iter(arrays.values()))}
    else:
        raise ValueError(
            f"{what} has arrays {sorted(arrays)} but the model's inputs are {[s.name for s in specs]}; "
            "name one array after each input"
        )
    for spec in specs:
        sample = bound[spec.name][:1]
        if preprocess_kind == "imagenet_nchw":
            sample = preprocess(sample)
        want = [d for i, d in enumerate(spec.shape) if i != spec.batch_axis]
        have = list(sample.shape[1:])
        if len(want) != len(have) or any(isinstance(w, int) and w != h for w, h in zip(want, have, strict=False)):
            raise ValueError(
                f"{what}: samples for input {spec.name!r} are shaped {have}, the model takes {spec.shape} "
                f"({'batch' if spec.batch_axis is not None else 'no batch'} axis aside)"
            )
        if np.dtype(sample.dtype).kind != np.dtype(spec.dtype).kind:
            raise ValueError(f"{what}: input {spec.name!r} holds {sample.dtype}, the model takes {spec.dtype}")
    return bound
