"""Timing, peak-memory and engine plumbing shared by the benchmark worker.

Repeats are time-budgeted: after warm-up, a configuration runs until it has ``min_repeats``
runs and ``budget_s`` seconds of runs, or ``max_repeats`` runs. Slow configurations (Cnn14 torch
at batch 32 x 10 s takes ~10 s a run on 2 cores) thus get the minimum count, fast ones many.
p95 over few runs is close to the max; the results record the repeat count of every cell.
"""

from __future__ import annotations

import os
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


def cpu_busy_s() -> float | None:
    """Seconds all CPUs have been busy since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class Interference:
    """Average cores kept busy by *other* processes while a block runs (None if unknown)."""

    def __enter__(self) -> Interference:
        self.busy, self.own, self.wall = cpu_busy_s(), own_cpu_s(), time.perf_counter()
        self.cores: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy = cpu_busy_s()
        wall = time.perf_counter() - self.wall
        if busy is not None and self.busy is not None and wall > 0:
            self.cores = max(0.0, (busy - self.busy - (own_cpu_s() - self.own)) / wall)


def wait_quiet(threshold: float, max_wait_s: float, window_s: float = 0.5) -> float | None:
    """Wait until other processes use under ``threshold`` cores (or ``max_wait_s`` passes)."""
    deadline = time.perf_counter() + max_wait_s
    while True:
        with Interference() as seen:
            time.sleep(window_s)
        if seen.cores is None or seen.cores < threshold or time.perf_counter() > deadline:
            return seen.cores


def measure(fn: Callable[[], Any], budget: Budget, quiet_cores: float | None = 0.25,
            attempts: int = 3, max_wait_s: float = 15.0,
            retry_below_s: float = 15.0) -> tuple[list[float], float | None]:
    """Time ``fn`` when the machine is quiet (shared machines: other work skews medians).

    Waits (at most ``max_wait_s``) until other processes use under ``quiet_cores`` cores, then
    times; if they used more meanwhile, retries (up to ``attempts``, only for attempts shorter
    than ``retry_below_s``). Returns the least-disturbed attempt's times and the cores other
    processes kept busy during it. ``quiet_cores=None`` times once without waiting.
    """
    best: tuple[list[float], float | None] | None = None
    for _ in range(attempts if quiet_cores is not None else 1):
        if quiet_cores is not None:
            wait_quiet(quiet_cores, max_wait_s)
        with Interference() as seen:
            times = time_runs(fn, budget)
        if best is None or (seen.cores or 0.0) < (best[1] or 0.0):
            best = (times, seen.cores)
        if (quiet_cores is None or seen.cores is None or seen.cores < quiet_cores
                or sum(times) > retry_below_s):
            break
    assert best is not None
    return best


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
