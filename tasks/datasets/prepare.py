"""Validation data: the samples every model (the CPU baseline and each compiled config) runs on; the stage's
entry points.

:func:`prepare` builds a built-in set (:mod:`tasks.datasets.builtin`) or reads a user's file or photo directory
(:mod:`tasks.datasets.user`), binds it to the model's inputs (:mod:`tasks.datasets.bind`) and writes
dataset.npz and calibration.npz; :func:`load` reads a prepared dataset back as a :class:`LoadedDataset`.

The prepared file holds arrays keyed by the model's own input names, checked against the
model's input specs, so a mismatch is an error before any compile starts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.files import file_ref, local_path, write_atomic
from tasks.core.records import DatasetRef, ExportedModel
from tasks.core.store import fetch
from tasks.datasets import calibration as calibration_file
from tasks.datasets.bind import _bind, check_labels
from tasks.datasets.builtin import _builtin
from tasks.datasets.imagenet import preprocess
from tasks.datasets.samples import CALIBRATION_SAMPLES
from tasks.datasets.user import user_file, user_images, user_text

ATTENTION_MASK = "attention_mask"  # which tokens of a padded text sample are real


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def prepare(
    spec: str, out_dir: str | Path, exported: ExportedModel, calibration_samples: int = CALIBRATION_SAMPLES
) -> DatasetRef:
    """Build or read the dataset, bind it to the model's inputs, write dataset.npz and calibration.npz (at most
    ``calibration_samples`` int8 calibration inputs, never validation samples)."""
    if spec.startswith("builtin:"):
        samples = _builtin(spec, exported, calibration_samples)
    elif local_path(spec).is_dir():
        samples = user_images(local_path(spec), calibration_samples)
    elif local_path(spec).suffix in (".txt", ".jsonl"):
        samples = user_text(local_path(spec), exported)
    else:
        samples = user_file(local_path(spec))
    what = f"dataset {spec}"
    arrays = _bind(samples.arrays, exported.inputs, what, samples.preprocess)
    judged_output = check_labels(samples, exported, what)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = {}
    if samples.labels is not None:
        extra["labels"] = samples.labels
    if samples.class_names is not None:
        extra["class_names"] = np.array(samples.class_names)
    out = _save_npz(
        out_dir / "dataset.npz",
        **{f"input__{name}": array for name, array in arrays.items()},
        **extra,
        preprocess=np.array(samples.preprocess),
        probe_index=np.array(samples.probe_index),
        **({} if samples.groups is None else {"groups": np.asarray(samples.groups)}),
    )
    ref = file_ref(out)
    calibration_uri = calibration_sha = ""
    calibration_count = 0
    if samples.calibration:
        calibration = _bind(samples.calibration, exported.inputs, f"{what} (calibration)", samples.preprocess)
        calibration = {name: array[:calibration_samples] for name, array in calibration.items()}
        calibration_count = len(next(iter(calibration.values())))
        cal_ref = file_ref(calibration_file.save(out_dir / "calibration.npz", calibration, samples.preprocess))
        calibration_uri, calibration_sha = cal_ref.uri, cal_ref.sha256
    return DatasetRef(
        uri=ref.uri,
        sha256=ref.sha256,
        name=samples.name,
        samples=len(next(iter(arrays.values()))),
        inputs=list(arrays),
        labelled=samples.labels is not None,
        sources=samples.sources,
        probe=samples.probe_name,
        calibration_uri=calibration_uri,
        calibration_sha256=calibration_sha,
        calibration_samples=calibration_count,
        class_output=judged_output,
        calibration_sources=samples.calibration_sources if calibration_count else [],
        sequence_length=samples.sequence_length,
        truncated_samples=samples.truncated,
    )


@dataclass(frozen=True)
class LoadedDataset:
    arrays: dict[str, np.ndarray]  # by model input name, as stored (uint8 images before preprocessing)
    labels: np.ndarray | None  # int32, N x k, -1 padded
    class_names: list[str] | None
    preprocess: str
    probe_index: int
    groups: np.ndarray | None = None  # the source of each sample; None: each sample its own

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Model-ready inputs of samples ``start:stop``."""
        out = {name: array[start:stop] for name, array in self.arrays.items()}
        if self.preprocess == "imagenet_nchw":
            out = {name: preprocess(array) for name, array in out.items()}
        return {name: np.ascontiguousarray(array) for name, array in out.items()}

    @property
    def sequence_length(self) -> int | None:
        """Tokens per stored text sample (what they were padded to); None for data without token inputs."""
        mask = self.arrays.get(ATTENTION_MASK)
        return None if mask is None else mask.shape[1]

    def fitting(self, length: int) -> tuple[LoadedDataset, np.ndarray]:
        """The text samples whose tokens fit a ``length``-token bucket, their token inputs cut to it (what the
        tokenizer gives at that length), and their indices here. The attention mask says which tokens are real."""
        stored = self.sequence_length
        if stored is None:
            raise ValueError(f"a {length}-token bucket needs text samples with an {ATTENTION_MASK!r} input")
        if length >= stored:
            return self, np.arange(len(self))
        indices = np.flatnonzero(self.arrays[ATTENTION_MASK].sum(axis=1) <= length)
        arrays = {
            name: array[indices][:, :length] if array.ndim == 2 and array.shape[1] == stored else array[indices]
            for name, array in self.arrays.items()
        }
        probe = np.flatnonzero(indices == self.probe_index)
        return (
            LoadedDataset(
                arrays=arrays,
                labels=None if self.labels is None else self.labels[indices],
                class_names=self.class_names,
                preprocess=self.preprocess,
                probe_index=int(probe[0]) if len(probe) else 0,
                groups=None if self.groups is None else self.groups[indices],
            ),
            indices,
        )


def load(ref: DatasetRef) -> LoadedDataset:
    path = fetch(ref.ref)  # checked against the sha256 it was prepared with
    with np.load(path, allow_pickle=False) as data:
        return LoadedDataset(
            arrays={name.removeprefix("input__"): data[name] for name in data.files if name.startswith("input__")},
            labels=data["labels"] if "labels" in data.files else None,
            class_names=[str(n) for n in data["class_names"]] if "class_names" in data.files else None,
            preprocess=str(data["preprocess"]),
            probe_index=int(data["probe_index"]),
            groups=data["groups"] if "groups" in data.files else None,
        )
