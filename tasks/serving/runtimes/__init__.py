"""The serving runtimes, one module each, owning its directory layout, its config, its container and its dtype
map (``base.ServingRuntime``). Which runtime reads a target's files is the target's own fact
(``Target.serving_layout``, built with a runtime's ``layout``). A new runtime is one module and a line here."""

from __future__ import annotations

from tasks.serving.runtimes import openvino_server, tf_serving, triton
from tasks.serving.runtimes.base import PointerRequest, ServingLayout, ServingRuntime

RUNTIMES: dict[str, ServingRuntime] = {m.RUNTIME.name: m.RUNTIME for m in (triton, tf_serving, openvino_server)}

__all__ = ["RUNTIMES", "PointerRequest", "ServingLayout", "ServingRuntime", "get"]


def get(name: str) -> ServingRuntime:
    if name not in RUNTIMES:
        raise ValueError(f"no serving runtime {name!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[name]
