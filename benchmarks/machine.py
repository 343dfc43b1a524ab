"""What the numbers were measured on: CPU, cores, memory, library versions, providers."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total RAM in GiB (Linux)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kb = int(handle.readline().split()[1])
        return round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """One dict for the results JSON."""
    import onnxruntime as ort

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": memory_gb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {p: version(p) for p in ("onnxruntime", "onnxruntime-gpu", "torch", "numpy",
                                              "onnx", "panns-inference")},
        "onnxruntime_providers": ort.get_available_providers(),
        "onnxruntime_device": ort.get_device(),
        "load_average_at_start": load,
    }
