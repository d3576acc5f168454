"""Running a model over many samples a batch at a time, and inputs made up from specs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from tasks.core.schema import TensorSpec

VALIDATION_BATCH = 8
# One batch of inputs, keyed by input name -> every output of the model, keyed by output name.
Predict = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# Told when a request of a RequestQueue finishes: seconds since it started. Its outputs stay in the request: the
# benchmark, the queue's one user, only times them, and copying them out cost time on every request.
Done = Callable[[float], None]


class RequestQueue(Protocol):
    """A runtime's own queue of requests in flight on one loaded model (OpenVINO's ``AsyncInferQueue``)."""

    size: int  # requests it keeps in flight

    def submit(self, inputs: dict[str, np.ndarray], done: Done) -> None:
        """Start one request on ``inputs`` once one of the ``size`` is free (blocks until then); ``done`` is called
        from the runtime's thread when it finishes. ``inputs`` must stay unchanged until then (they are shared)."""

    def wait(self) -> None:
        """Return once every request started has finished."""


class OutputMismatch(ValueError):
    """A runtime's outputs cannot be matched, by name, to the ones the model declares."""


def named_outputs(values, names: list[str], what: str = "the model") -> dict[str, np.ndarray]:
    """Outputs a runtime gives by position (a tensor or a sequence of them), named in the declared order."""
    values = [values] if hasattr(values, "shape") else list(values)
    if len(values) != len(names):
        raise OutputMismatch(f"{what} gives {len(values)} outputs, the model declares {len(names)}: {names}")
    return dict(zip(names, values, strict=True))


def match_outputs(outputs: dict[str, np.ndarray], declared: list[str], what: str) -> dict[str, np.ndarray]:
    """``outputs`` in the declared order; a missing or unexpected name is an error that lists both sides."""
    missing = [name for name in declared if name not in outputs]
    extra = [name for name in outputs if name not in declared]
    if missing or extra:
        raise OutputMismatch(
            f"{what}: outputs {sorted(outputs)} do not match the model's {declared} by name "
            f"(missing {missing}, unexpected {extra})"
        )
    return {name: outputs[name] for name in declared}


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


def run_batched(predict: Predict, data: BatchSource, batch_size: int) -> dict[str, np.ndarray]:
    """Every output for all samples, by name; the last batch is padded (fixed-shape models need full batches)."""
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        batch = data.inputs(start, start + batch_size)
        real = len(next(iter(batch.values())))
        if real < batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - real, axis=0)]) for k, v in batch.items()}
        for name, value in predict(batch).items():
            outputs.setdefault(name, []).append(np.asarray(value)[:real])
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def is_token_input(spec: TensorSpec) -> bool:
    """Token ids, attention mask and token type ids: integer inputs shaped [batch, sequence]."""
    return len(spec.shape) == 2 and not spec.dtype.startswith("float") and spec.dtype != "bool"


def at_sequence_length(specs: list[TensorSpec], length: int | None) -> list[TensorSpec]:
    """``specs`` with their token inputs ``length`` tokens long (a static-shape bucket); unchanged for None."""
    if not length:
        return specs
    return [s.model_copy(update={"shape": [s.shape[0], length]}) if is_token_input(s) else s for s in specs]


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
