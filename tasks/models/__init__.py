"""Model architectures the pipeline can rebuild from a weights-only state dict.

Weights files are never unpickled with code: an architecture is chosen by name from
this registry and the state dict is loaded with ``weights_only=True``. Each architecture's
module imports torch, so it is imported only when the architecture is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from tasks.core.schema import TensorSpec

if TYPE_CHECKING:
    import torch

# name -> "module:class" of an untrained instance (one registry line per architecture)
ARCHITECTURES: dict[str, str] = {
    "mobilenet_v2": "tasks.models.mobilenet_v2:MobileNetV2",
    "resnet50": "tasks.models.resnet50:ResNet50",
}


def input_spec(architecture: str) -> TensorSpec:
    """The input an architecture takes; every built-in architecture is an ImageNet-style classifier."""
    build(architecture)  # names an unknown architecture clearly
    return TensorSpec(name="input", shape=["batch", 3, 224, 224], dtype="float32")


def build(architecture: str) -> torch.nn.Module:
    """Return an untrained instance of ``architecture``."""
    try:
        module, _, name = ARCHITECTURES[architecture].partition(":")
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {architecture!r}; known architectures: {known}") from None
    return getattr(importlib.import_module(module), name)()
