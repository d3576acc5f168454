"""The machine a benchmark runs on: CPU model, cores, and its measured dense-matmul peak.

The peak is what a well-tuned GEMM reaches here (torch.matmul on square matrices, all
cores, best of several runs), per precision; a model's throughput x FLOPs per sample
over it says how much of the machine the compiled model uses. Measured once per host
and CPU and kept under the pipeline home (a few seconds each time it is measured).
"""

from __future__ import annotations

import json
import platform
import socket
import time
from pathlib import Path

from tasks.files import write_json
from tasks.records import MachineContext

MATMUL_SIZE = 2048
REPEATS = 5


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_peak_gflops(dtype: str, size: int = MATMUL_SIZE, repeats: int = REPEATS) -> float:
    """Best GFLOP/s of ``size`` x ``size`` matmuls in ``dtype`` (0.0 where the CPU cannot run it)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(size, size).to(torch_dtype)
    b = torch.randn(size, size).to(torch_dtype)
    try:
        torch.matmul(a, b)  # warm-up: thread pool, kernel selection
    except RuntimeError:
        return 0.0
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return round(best, 1)


def context(cache_dir: str | Path | None = None, refresh: bool = False) -> MachineContext:
    """This machine's context; the peak comes from ``cache_dir`` where it was measured before."""
    import psutil

    host, model = socket.gethostname(), cpu_model()
    cached_path = Path(cache_dir) / f"{host}.json" if cache_dir else None
    if cached_path and cached_path.exists() and not refresh:
        cached = MachineContext.model_validate(json.loads(cached_path.read_text()))
        if cached.cpu_model == model:
            return cached
    measured = MachineContext(
        host=host,
        cpu_model=model,
        cores_physical=psutil.cpu_count(logical=False) or 1,
        cores_logical=psutil.cpu_count(logical=True) or 1,
        peak_gflops={dtype: matmul_peak_gflops(dtype) for dtype in ("fp32", "bf16")},
    )
    if cached_path:
        write_json(cached_path, measured.to_json())
    return measured


def peak_share(
    throughput: float, flops_per_sample: int | None, precision: str, machine: MachineContext
) -> float | None:
    """Achieved FLOP/s over the machine's measured peak for the precision (None where there is no peak)."""
    peak = machine.peak_gflops.get({"fp32": "fp32", "bf16": "bf16"}.get(precision, ""), 0.0)
    if not flops_per_sample or not peak:
        return None
    return throughput * flops_per_sample / (peak * 1e9)
