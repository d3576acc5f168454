"""Running a model over many samples a batch at a time, and inputs made up from specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from tasks.core.records import TensorSpec

VALIDATION_BATCH = 8
# One batch of inputs, keyed by input name -> the model's first output (logits or embeddings).
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


class BatchSource(Protocol):
    """Samples read a slice at a time: a prepared dataset, or arrays in memory."""

    def __len__(self) -> int: ...

    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]: ...


class ArrayInputs:
    """In-memory inputs by name, read like a dataset (``len`` and ``inputs(start, stop)``)."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def inputs(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        return {k: np.ascontiguousarray(v[start:stop]) for k, v in self.arrays.items()}


def run_batched(predict: Predict, data: BatchSource, batch_size: int) -> np.ndarray:
    """Outputs for all samples; the last batch is padded (fixed-shape models need full batches)."""
    outputs = []
    for start in range(0, len(data), batch_size):
        batch = data.inputs(start, start + batch_size)
        real = len(next(iter(batch.values())))
        if real < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)]) for k, v in batch.items()}
        outputs.append(np.asarray(predict(batch))[:real])
    return np.concatenate(outputs)


def example_inputs(specs: list[TensorSpec], batch_size: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs that fit ``specs``; integer inputs get 0/1 (valid token ids and attention masks)."""
    rng = np.random.default_rng(seed)
    out = {}
    for spec in specs:
        shape = [batch_size if isinstance(d, str) else d for d in spec.shape]
        if spec.dtype.startswith("float"):
            out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            out[spec.name] = np.ones(shape, dtype=bool)
        else:
            out[spec.name] = rng.integers(0, 2, size=shape).astype(spec.dtype)
    return out
