"""What this CPU can do natively, read from ``/proc/cpuinfo``: which reduced precisions run in hardware.

On a CPU without them a runtime emulates the precision (PyTorch's bf16 matmul on AVX2 runs orders of
magnitude slower than fp32) or silently falls back to fp32, so a config in that precision measures nothing
worth having; the plan skips it and says why.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86; aarch64 lists "bf16" among its Features
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@functools.cache  # the CPU does not change under a process
def cpuinfo() -> str:
    """``/proc/cpuinfo``, read once per process; empty where it cannot be read (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def flags() -> frozenset[str]:
    """The first processor's flags (x86) or features (aarch64); empty where /proc/cpuinfo cannot be read."""
    for line in cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i686", "i386")


def has_native_bf16() -> bool:
    """Whether bf16 matmuls run in hardware (AVX512-BF16 or AMX on x86, the bf16 feature on aarch64)."""
    found = flags()
    return any(f in found for f in BF16_FLAGS) if is_x86() else "bf16" in found


def has_vnni() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX512-VNNI or AVX-VNNI); non-x86 CPUs count as yes
    (ONNX Runtime's ``reduce_range`` is about x86's saturating u8 x s8 multiplies)."""
    return not is_x86() or any(f in flags() for f in VNNI_FLAGS)


def bf16_missing() -> str:
    """Why bf16 is not worth compiling here, or "" where it runs in hardware."""
    if has_native_bf16():
        return ""
    return "this CPU has no bf16 instructions (" + ("AVX512-BF16 or AMX" if is_x86() else "bf16 feature") + ")"
