"""The machine a benchmark runs on: CPU model, cores, and its measured dense-matmul peak.

The peak is what a well-tuned GEMM reaches here, per precision: the best of several runs
of square matmuls of a few sizes on all cores, through PyTorch (oneDNN) and, for fp32,
ONNX Runtime (MLAS). A model's throughput x FLOPs per sample over it says how much of the
machine the compiled model uses. It is a measured figure, not the datasheet's: a fused
convolution kernel can beat a plain GEMM by a few percent, and on a shared machine a
neighbour lowers it. Measured once per host and CPU and kept under the pipeline home; tasks
that start together on a new host wait for one measurement (a file lock) instead of each
running their own on the same cores. Only precisions the CPU runs in hardware are measured
(bf16 emulated on AVX2 is orders of magnitude slower: minutes per matmul, and no peak worth the name),
and each size stops repeating after a time budget.
"""

from __future__ import annotations

import fcntl
import json
import platform
import time
from pathlib import Path

import numpy as np
import psutil

from tasks.core import cpu
from tasks.core import settings as settings_module
from tasks.core.files import write_json
from tasks.core.results import MachineContext

# Heavy, so imported inside the functions that need them (DAG parsing and most tasks never do): onnx, onnxruntime, torch.

MATMUL_SIZES = (1024, 2048)
REPEATS = 8
BUDGET_S = 2.0  # per size and library: enough for the repeats at any real peak, bounded where the CPU is slow


def cpu_model() -> str:
    for line in cpu.cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _best_gflops(matmul, size: int, repeats: int, budget_s: float = BUDGET_S) -> float:
    began = time.perf_counter()
    matmul()  # warm-up: thread pool, kernel selection
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        matmul()
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
        if time.perf_counter() - began > budget_s:
            break
    return best


def _onnxruntime_matmul(size: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    spec = [size, size]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, spec) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, spec)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(spec, dtype=np.float32) for n in ("a", "b")}
    return lambda: session.run(None, feeds)


def matmul_peak_gflops(dtype: str, sizes: tuple[int, ...] = MATMUL_SIZES, repeats: int = REPEATS) -> float:
    """Best GFLOP/s of square matmuls in ``dtype`` over ``sizes`` and libraries (0.0 where none runs it)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    best = 0.0
    for size in sizes:
        a, b = (torch.randn(size, size).to(torch_dtype) for _ in range(2))
        candidates = [lambda a=a, b=b: torch.matmul(a, b)]
        if dtype == "fp32":
            candidates.append(_onnxruntime_matmul(size))
        for matmul in candidates:
            try:
                best = max(best, _best_gflops(matmul, size, repeats))
            except RuntimeError:  # this CPU (or library) has no kernel for the precision
                continue
    return round(best, 1)


def context(cache_dir: str | Path | None = None, refresh: bool = False) -> MachineContext:
    """This machine's context; the peak comes from ``cache_dir`` where it was measured before."""

    host = settings_module.this_host()
    if not cache_dir:
        return _measure(host, None)
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / f"{host}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # whoever measures first, the others read what it wrote
        cached_path = Path(cache_dir) / f"{host}.json"
        if cached_path.exists() and not refresh:
            cached = MachineContext.model_validate(json.loads(cached_path.read_text()))
            if cached.cpu_model == cpu_model():
                return cached
        return _measure(host, cached_path)


def _measure(host: str, cached_path: Path | None) -> MachineContext:
    model = cpu_model()  # cpuinfo is read once per process
    measured = MachineContext(
        host=host,
        cpu_model=model,
        cores_physical=psutil.cpu_count(logical=False) or 1,
        cores_logical=psutil.cpu_count(logical=True) or 1,
        peak_gflops={dtype: matmul_peak_gflops(dtype) for dtype in measured_precisions()},
    )
    if cached_path:
        write_json(cached_path, measured.to_json())
    return measured


def measured_precisions() -> tuple[str, ...]:
    return ("fp32", "bf16") if cpu.has_native_bf16() else ("fp32",)


def peak_share(
    throughput: float, flops_per_sample: int | None, precision: str, machine: MachineContext
) -> float | None:
    """Achieved FLOP/s over the machine's measured peak for the precision (None where there is no peak)."""
    peak = machine.peak_gflops.get({"fp32": "fp32", "bf16": "bf16"}.get(precision, ""), 0.0)
    if not flops_per_sample or not peak:
        return None
    return throughput * flops_per_sample / (peak * 1e9)
