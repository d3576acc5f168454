"""Model architectures the pipeline can rebuild from a weights-only state dict.

Weights files are never unpickled with code: an architecture is chosen by name
from this registry and the state dict is loaded with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _mobilenet_v2() -> torch.nn.Module:
    from tasks.models.mobilenet_v2 import MobileNetV2

    return MobileNetV2()


def _resnet50() -> torch.nn.Module:
    from tasks.models.resnet50 import ResNet50

    return ResNet50()


ARCHITECTURES: dict[str, Callable[[], torch.nn.Module]] = {
    "mobilenet_v2": _mobilenet_v2,
    "resnet50": _resnet50,
}


def input_spec(architecture: str):
    """The input an architecture takes; every built-in architecture is an ImageNet-style classifier."""
    from tasks.records import TensorSpec

    build(architecture)  # names an unknown architecture clearly
    return TensorSpec(name="input", shape=["batch", 3, 224, 224], dtype="float32")


def build(architecture: str) -> torch.nn.Module:
    """Return an untrained instance of ``architecture``."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {architecture!r}; known architectures: {known}") from None
    return factory()
