"""A user's dataset: a ``.txt`` file (one text per line) or ``.jsonl`` file (``{"text": ..., "label": <class id>}``
per line, the label optional but all or none), tokenised by the model's own tokenizer; a ``.npz`` file; or a
directory of photos.

A user's ``.npz`` file holds one array per model input (by input name, or one array for a
one-input model), optionally ``labels`` (class ids, N or N x k with -1 padding) and
``calibration__<input name>`` arrays for int8 calibration. A user's directory of photos
holds ``labels.csv`` (file, label[, label ...]; class ids or ImageNet class names) and is
prepared like the built-in photos.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from tasks.core.records import ExportedModel
from tasks.datasets.builtin import (
    BUILTIN_CALIBRATION_TEXTS,
    CALIBRATION_SOURCES,
    _builtin_texts,
    _resized,
    calibration_inputs,
    class_names,
    crop_boxes,
    text_samples,
)
from tasks.datasets.samples import CALIBRATION_SAMPLES, Samples

# Heavy, so imported inside the function that needs it (DAG parsing and most tasks never do): skimage.


def user_text(path: Path, exported: ExportedModel) -> Samples:
    """A .txt file (one text per line) or .jsonl file (``text``, optional ``label``), tokenised for the model."""
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist")
    calibration, calibration_source = _text_calibration(path)
    texts, labels = _texts(path)
    return text_samples(
        str(path),
        texts,
        exported,
        labels=labels,
        calibration=calibration,
        calibration_source=calibration_source,
    )


def _texts(path: Path) -> tuple[list[str], list[int] | None]:
    """The texts of a .txt file (one per line) or a .jsonl file (``text``, optional ``label``: all or none), and
    their labels (None where there are none)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".txt":
        return lines, None
    texts, labels = [], []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"file {path} line {number} is not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f'file {path} line {number} has no "text" string')
        texts.append(row["text"])
        if "label" in row:
            if not isinstance(row["label"], int):
                raise ValueError(f"file {path} line {number}: label {row['label']!r} is not a class id")
            labels.append(row["label"])
    if labels and len(labels) != len(texts):
        raise ValueError(f"file {path}: {len(labels)} of {len(texts)} lines have a label; all or none must")
    return texts, labels or None


def _text_calibration(path: Path) -> tuple[list[str], str]:
    """int8 calibration texts for a user's text file: ``<name>.calibration.txt`` (one text per line) or
    ``<name>.calibration.jsonl`` (a ``text`` per line) beside it, else the built-in calibration sentences; never the
    validation texts themselves."""
    for suffix in (".txt", ".jsonl"):
        beside = path.with_name(f"{path.stem}.calibration{suffix}")
        if beside.is_file():
            texts, _ = _texts(beside)
            if not texts:
                raise ValueError(f"calibration file {beside} holds no texts")
            return texts, str(beside)
    return _builtin_texts("calibration.txt"), BUILTIN_CALIBRATION_TEXTS


def user_file(path: Path) -> Samples:
    if not path.is_file():
        raise ValueError(f"dataset file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except Exception as exc:
        raise ValueError(f"dataset file {path} is not a readable .npz file: {type(exc).__name__}: {exc}") from exc
    labels = arrays.pop("labels", None)
    calibration = {
        k.removeprefix("calibration__"): arrays.pop(k) for k in list(arrays) if k.startswith("calibration__")
    }
    if not arrays:
        raise ValueError(f"dataset file {path} holds no input arrays (only {sorted(calibration)} and labels)")
    counts = {name: len(a) for name, a in arrays.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(f"dataset file {path}: input arrays have different sample counts {counts}")
    if not next(iter(counts.values())):
        raise ValueError(f"dataset file {path} holds no samples (its input arrays are empty): nothing to validate on")
    if labels is not None:
        labels = labels.reshape(len(labels), -1).astype(np.int32)
        if len(labels) != next(iter(counts.values())):
            raise ValueError(f"dataset file {path}: {len(labels)} labels for {next(iter(counts.values()))} samples")
    return Samples(
        name=str(path),
        arrays=arrays,
        calibration=calibration,
        labels=labels,
        sources=[path.name],
        probe_name="sample 0",
    )


LABELS_FILE = "labels.csv"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _label_id(text: str, names: dict[str, int], where: str) -> int:
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.lower() in names:
        return names[text.lower()]
    raise ValueError(f"{where}: label {text!r} is neither a class id nor an ImageNet class name")


def user_images(directory: Path, calibration_samples: int = CALIBRATION_SAMPLES) -> Samples:
    """A directory of photos with ``labels.csv`` (rows: file, label[, label ...]; a label is a class id
    or an ImageNet class name). Centre-cropped and resized to 224x224 like the built-in photos."""

    from skimage.io import imread

    labels_path = directory / LABELS_FILE
    if not labels_path.is_file():
        raise ValueError(f"dataset directory {directory} has no {LABELS_FILE} (rows: file, label[, label ...])")
    names = {name.lower(): i for i, name in enumerate(class_names())}
    images, label_sets = [], []
    with labels_path.open(newline="") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            cells = [c for c in row if c.strip()]
            if not cells or (line_no == 1 and cells[0].strip().lower() in ("file", "filename", "image", "path")):
                continue  # blank line or header
            where = f"{labels_path}, line {line_no}"
            if len(cells) < 2:
                raise ValueError(f"{where}: expected file, label[, label ...], got {row}")
            path = directory / cells[0].strip()
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                raise ValueError(f"{where}: image {path} does not exist or is not an image file")
            try:
                image = imread(path)
            except Exception as exc:
                raise ValueError(f"{where}: cannot read image {path}: {type(exc).__name__}: {exc}") from exc
            if image.ndim == 2:
                image = np.stack([image] * 3, axis=-1)
            top, left, side, _ = crop_boxes(*image.shape[:2])[0]
            images.append(_resized(image[top : top + side, left : left + side, :3]))
            label_sets.append([_label_id(c, names, where) for c in cells[1:]])
    if not images:
        raise ValueError(f"{labels_path} lists no images")
    width = max(len(s) for s in label_sets)
    labels = np.array([s + [-1] * (width - len(s)) for s in label_sets], dtype=np.int32)
    return Samples(
        name=str(directory),
        arrays={"input": np.stack(images)},
        calibration={"input": calibration_inputs(calibration_samples)},  # never the validation images themselves
        calibration_sources=CALIBRATION_SOURCES,
        labels=labels,
        class_names=list(class_names()),
        preprocess="imagenet_nchw",
        sources=[directory.name],
        probe_name="the first image",
    )
