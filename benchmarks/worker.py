"""One benchmark job in its own process (so peak RSS is its own): a JSON spec on stdin, a JSON
result as the last stdout line. ``python -m benchmarks.worker < spec.json``.

Spec keys: engine (torch|onnx), provider (cpu|cuda|tensorrt), model_dir, backbone, weights
(torch only), clips [s], batches, budget {warmup, min_repeats, max_repeats, budget_s},
threads (None = library default), daemon (bool).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks import engines
from benchmarks.harness import Budget, measure, peak_rss_mb, reset_peak_rss, stats, test_signal
from benchmarks.report import REFERENCE_CELL


def load_runner(spec: dict[str, Any]) -> tuple[engines.Runner, str, float]:
    """The timed callable, the provider it really runs on, and its start-up seconds."""
    start = time.perf_counter()
    if spec["engine"] == "torch":
        runner = engines.torch_runner(spec["backbone"], Path(spec["weights"]), spec["threads"])
        return runner, "torch-cpu", time.perf_counter() - start
    sessions = engines.onnx_sessions(Path(spec["model_dir"]), spec["provider"], spec["threads"])
    return engines.onnx_runner(sessions), sessions.provider, time.perf_counter() - start


def daemon(spec: dict[str, Any], budget: Budget) -> list[dict[str, Any]]:
    """Compute per audio-second of the daemon's hop at 1 thread and at the default threads."""
    rows = []
    for threads in (1, None):
        sessions = engines.onnx_sessions(Path(spec["model_dir"]), spec["provider"], threads)
        run, hop_s = engines.daemon_hop_runner(sessions)
        times, others = measure(lambda run=run: run(None), budget, spec["quiet_cores"])
        row = {**stats(times, hop_s, 1), "other_processes_cores": others}
        rows.append({"threads": threads or engines.default_threads(),
                     "threads_setting": threads or "default", "hop_s": hop_s,
                     "compute_ms_per_audio_s": 1000 * row["median_s"] / hop_s,
                     "p95_ms_per_audio_s": 1000 * row["p95_s"] / hop_s, **row})
    return rows


def reference_one_thread(spec: dict[str, Any], budget: Budget) -> dict[str, Any]:
    """The headline cell (5 s clip, batch 1) again with 1 onnxruntime thread: the int8 vs fp32
    ratio without the second core (int8 and fp32 scale differently with threads)."""
    clip_s, batch = REFERENCE_CELL
    runner = engines.onnx_runner(engines.onnx_sessions(Path(spec["model_dir"]), spec["provider"],
                                                       1))
    signal = test_signal(batch, clip_s)
    times, others = measure(lambda: runner(signal), budget, spec["quiet_cores"])
    return {"clip_s": clip_s, "batch": batch, "threads": 1,
            **stats(times, clip_s * batch, batch), "other_processes_cores": others}


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    budget = Budget(**spec["budget"])
    runner, provider, startup = load_runner(spec)
    result: dict[str, Any] = {"startup_s": startup, "provider": provider,
                              "peak_rss_load_mb": peak_rss_mb(), "configs": []}
    # Smallest audio first: allocator arenas only grow, so with the peak reset before each
    # cell, a cell's VmHWM is its own peak (earlier, smaller cells left less resident).
    cells = sorted(((c, b) for c in spec["clips"] for b in spec["batches"]),
                   key=lambda cb: (cb[0] * cb[1], cb[0]))
    for clip_s, batch in tqdm(cells, desc=spec.get("label", spec["engine"]), unit="cfg",
                              leave=False, file=sys.stderr):
        signal = test_signal(batch, clip_s)
        per_rss = reset_peak_rss()
        times, others = measure(lambda signal=signal: runner(signal), budget, spec["quiet_cores"])
        row = {**stats(times, clip_s * batch, batch), "other_processes_cores": others}
        result["configs"].append({"clip_s": clip_s, "batch": batch, **row,
                                  "peak_rss_mb": peak_rss_mb(),
                                  "peak_rss_scope": "config" if per_rss else "process"})
    if spec.get("daemon") and spec["engine"] == "onnx":
        result["daemon"] = daemon(spec, budget)
        if spec["provider"] == "cpu":
            result["reference_1_thread"] = reference_one_thread(spec, budget)
    return result


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    spec = json.loads(sys.stdin.read())
    print(json.dumps(run_job(spec)), flush=True)


if __name__ == "__main__":
    main()
