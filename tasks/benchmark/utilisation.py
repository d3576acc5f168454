"""Device utilisation while a benchmark point runs, as operators watch it: per CPU core
(psutil), per GPU (``nvidia-smi``), per NeuronCore (``neuron-monitor``, the JSON feed
behind ``neuron-top``). A tuned point that leaves the device idle shows here.

A probe is started before the measurement windows; ``sample()`` after each window
returns the utilisation (percent) per core or device since the previous sample.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

import psutil

NEURON_MONITOR_CONFIG = {
    "period": "1s",
    "neuron_runtimes": [{"tag_filter": ".*", "metrics": [{"type": "neuroncore_counters"}]}],
}


class CpuProbe:
    device = "CPU"

    def start(self) -> None:
        psutil.cpu_percent(percpu=True)  # the first call only sets the reference point

    def sample(self) -> list[float]:
        return list(psutil.cpu_percent(percpu=True))

    def stop(self) -> None:
        pass


class StreamProbe:
    """Reads a monitoring command's output line by line on a thread; ``parse`` turns a line into
    {core or device index: utilisation %}; a sample is the mean per index since the last one."""

    device = ""
    command: list[str] = []

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.readings: dict[int, list[float]] = defaultdict(list)
        self.lock = threading.Lock()
        self.last: list[float] = []

    @staticmethod
    def parse(line: str) -> dict[int, float]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                values = self.parse(line)
            except (ValueError, KeyError, TypeError):
                continue
            with self.lock:
                for index, value in values.items():
                    self.readings[index].append(value)

    def sample(self) -> list[float]:
        with self.lock:
            if self.readings:  # a monitor that reports less often than windows end repeats its last reading
                count = max(self.readings) + 1
                self.last = [sum(v) / len(v) if (v := self.readings.get(i)) else 0.0 for i in range(count)]
            self.readings.clear()
        return list(self.last)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)
        self.cleanup()

    def cleanup(self) -> None:
        """Remove what the probe wrote to start its monitor (nothing, unless a subclass did)."""


class GpuProbe(StreamProbe):
    device = "GPU"
    command = ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]

    @staticmethod
    def parse(line: str) -> dict[int, float]:
        index, utilisation = (field.strip() for field in line.split(","))
        return {int(index): float(utilisation)}


class NeuronProbe(StreamProbe):
    device = "Neuron"

    def __init__(self) -> None:
        super().__init__()
        config = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115 - read by the monitor
        json.dump(NEURON_MONITOR_CONFIG, config)
        config.close()
        self.command = ["neuron-monitor", "-c", config.name]

    def cleanup(self) -> None:
        Path(self.command[-1]).unlink(missing_ok=True)

    @staticmethod
    def parse(line: str) -> dict[int, float]:
        """NeuronCore utilisation from one neuron-monitor report, summed over the runtimes using each core."""
        report = json.loads(line)
        cores: dict[int, float] = defaultdict(float)
        for runtime in report.get("neuron_runtime_data") or []:
            counters = (runtime.get("report") or {}).get("neuroncore_counters") or {}
            for core, values in (counters.get("neuroncores_in_use") or {}).items():
                cores[int(core)] += float((values or {}).get("neuroncore_utilization") or 0.0)
        return dict(cores)


def probe_for(device: str) -> CpuProbe | StreamProbe:
    """The probe for where a compiled model runs; the CPU's where the device's tool is missing."""
    if device.startswith("Neuron") and shutil.which("neuron-monitor"):
        return NeuronProbe()
    if "GPU" in device and shutil.which("nvidia-smi"):
        return GpuProbe()
    return CpuProbe()
