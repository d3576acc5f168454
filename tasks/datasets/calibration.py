"""The int8 calibration file the compile stage hands to quantisers: inputs by model input name, never validation
samples. Photos are stored as uint8 (300 preprocessed ImageNet inputs would be 180 MB) and preprocessed on load."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tasks.core.files import write_atomic
from tasks.datasets.imagenet import PREPROCESS, preprocess

PREPROCESS_KEY = "__preprocess__"


def save(path: Path, arrays: dict[str, np.ndarray], preprocess_kind: str = "") -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{PREPROCESS_KEY: np.array(preprocess_kind)})
    return write_atomic(path, buffer.getvalue())


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Model-ready calibration inputs by input name."""
    with np.load(path, allow_pickle=False) as data:
        kind = str(data[PREPROCESS_KEY]) if PREPROCESS_KEY in data.files else ""
        arrays = {name: data[name] for name in data.files if name != PREPROCESS_KEY}
    if kind == PREPROCESS:
        arrays = {name: preprocess(array) for name, array in arrays.items()}
    return arrays
