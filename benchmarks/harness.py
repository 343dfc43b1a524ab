"""Timing, peak-memory and engine plumbing shared by the benchmark worker.

Repeats are time-budgeted: after warm-up, a configuration runs until it has ``min_repeats``
runs and ``budget_s`` seconds of runs, or ``max_repeats`` runs. Slow configurations (Cnn14 torch
at batch 32 x 10 s takes ~10 s a run on 2 cores) thus get the minimum count, fast ones many.
p95 over few runs is close to the max; the results record the repeat count of every cell.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 32_000
GPU_PROVIDERS = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


@dataclass
class Budget:
    """How hard each configuration is timed."""

    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 30
    budget_s: float = 2.5


def time_runs(fn: Callable[[], Any], budget: Budget) -> list[float]:
    """Seconds of each timed run of ``fn`` after ``budget.warmup`` untimed ones."""
    for _ in range(budget.warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < budget.max_repeats and (len(times) < budget.min_repeats
                                               or spent < budget.budget_s):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return times


def stats(times: list[float], audio_seconds: float, clips: int) -> dict[str, float]:
    """Median / p95 latency, clips per second and real-time factor of one configuration.

    ``rtf`` = compute time / audio duration (below 1 is faster than real time);
    ``x_realtime`` is its inverse.
    """
    median = float(np.median(times))
    return {"repeats": len(times), "median_s": median,
            "p95_s": float(np.percentile(times, 95)), "min_s": float(np.min(times)),
            "clips_per_s": clips / median, "rtf": median / audio_seconds,
            "x_realtime": audio_seconds / median}


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else the whole process's ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def provider_skip_reason(provider: str, available: list[str]) -> str | None:
    """Why ``provider`` cannot be benchmarked here, or None when it can."""
    if provider == "cpu":
        return None
    name = GPU_PROVIDERS[provider]
    if name not in available:
        return (f"{name} is not in this onnxruntime build (available: {', '.join(available)}); "
                "install onnxruntime-gpu on a machine with an NVIDIA GPU")
    return None


def test_signal(batch: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Seeded white noise ``[batch, samples]`` at 0.1 RMS (timing does not depend on content)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    return (0.1 * rng.standard_normal((batch, n))).astype(np.float32)


def file_mb(*paths: Path) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6
