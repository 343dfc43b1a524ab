"""``python -m benchmarks.run [--fast] [--model DIR ...] [--weights PTH ...] [--out DIR]``

For every model dir: torch eager (the reference: panns_inference Cnn14, or the project's mn04
module; fp32 dirs only, when the checkpoint is found), then ONNX on every provider (CPU; CUDA
with I/O binding and TensorRT where this onnxruntime has them, else skipped with the reason).
Each job runs in its own process, so its peak RSS is its own. Writes ``<name>.json``,
``<name>.md`` and ``<name>.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks import report
from benchmarks.engines import model_info
from benchmarks.harness import provider_skip_reason
from benchmarks.machine import machine_info
from edge_runtime import atomic
from edge_runtime.manifest import sha256_file

log = logging.getLogger("benchmarks")
REPO = Path(__file__).resolve().parents[1]
FULL = {"clips": [1.0, 5.0, 10.0], "batches": [1, 8, 32],
        "budget": {"warmup": 1, "min_repeats": 3, "max_repeats": 30, "budget_s": 2.5},
        "quiet_cores": 0.25}
FAST = {"clips": [1.0], "batches": [1],
        "budget": {"warmup": 1, "min_repeats": 2, "max_repeats": 2, "budget_s": 0.0},
        "quiet_cores": None}
PROVIDERS = ("cpu", "cuda", "tensorrt")


def load_average() -> list[float] | None:
    """1/5/15-minute load: other work on the machine disturbs the timings."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def find_weights(info: dict[str, Any], candidates: list[Path]) -> Path | None:
    """The checkpoint (by sha256) a model dir was exported from, among candidates and caches."""
    want = info["checkpoint"].get("sha256")
    name = info["checkpoint"].get("file")
    if not want:
        return None
    search = list(candidates)
    if name:
        from export.weights import cache_dir

        search += [cache_dir() / name, REPO.parent / "shared" / "weights" / name]
    for path in search:
        if path.is_file() and sha256_file(path) == want:
            return path
    return None


def plan(models: list[Path], weights: list[Path], settings: dict[str, Any],
         available: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Job specs to run, and the skipped ones with their reasons."""
    jobs, skipped = [], []
    for model_dir in models:
        info = model_info(model_dir)
        base = {"model_dir": str(model_dir), "backbone": info["backbone"], "threads": None,
                "clips": settings["clips"], "batches": settings["batches"],
                "budget": settings["budget"], "quiet_cores": settings["quiet_cores"],
                "info": info}
        name = f"{info['backbone']} {info['precision']}"
        if info["precision"] == "fp32" and settings.get("torch", True):
            found = find_weights(info, weights)
            if found is None:
                skipped.append({"label": f"{name} torch",
                                "reason": "checkpoint not found (pass --weights PATH)"})
            else:
                jobs.append({**base, "engine": "torch", "provider": "cpu", "weights": str(found),
                             "label": "torch eager", "daemon": False})
        for provider in PROVIDERS:
            reason = provider_skip_reason(provider, available)
            label = f"onnx {provider}"
            if reason:
                log.info("skipping %s %s: %s", name, label, reason)
                skipped.append({"label": f"{name} {label}", "reason": reason})
                continue
            jobs.append({**base, "engine": "onnx", "provider": provider, "label": label,
                         "daemon": True})
    return jobs, skipped


def run_worker(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one job in a fresh interpreter; its last stdout line is the JSON result."""
    payload = {k: v for k, v in spec.items() if k != "info"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.worker"], input=json.dumps(payload),
                          capture_output=False, stdout=subprocess.PIPE, text=True,
                          cwd=REPO, timeout=timeout, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark job {spec['backbone']} {spec['label']} failed "
                           f"(exit {proc.returncode})")
    return json.loads(lines[-1])


def short_settings(clips: list[float] | None, batches: list[int] | None,
                   budget_s: float | None) -> dict[str, Any]:
    """FULL with fewer cells or a smaller time budget per cell (a shorter run on a shared
    machine); the reference cell (5 s, batch 1) is always measured."""
    settings = {**FULL, "budget": dict(FULL["budget"])}
    if clips:
        settings["clips"] = sorted({*clips, report.REFERENCE_CELL[0]})
    if batches:
        settings["batches"] = sorted({*batches, report.REFERENCE_CELL[1]})
    if budget_s is not None:
        settings["budget"]["budget_s"] = budget_s
    if (clips, batches, budget_s) != (None, None, None):
        settings["mode"] = "short"
    return settings


def run_all(models: list[Path], weights: list[Path], fast: bool,
            settings: dict[str, Any] | None = None) -> dict[str, Any]:
    settings = FAST if fast else settings or FULL
    machine = machine_info()
    jobs, skipped = plan(models, weights, settings, machine["onnxruntime_providers"])
    runs = []
    start = time.perf_counter()
    for spec in tqdm(jobs, desc="benchmark jobs", unit="job"):
        info = spec["info"]
        try:
            result = run_worker(spec)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log.error("%s", exc)
            skipped.append({"label": f"{info['backbone']} {spec['label']}", "reason": str(exc)})
            continue
        runs.append({"backbone": info["backbone"], "precision": info["precision"],
                     "engine": spec["engine"], "provider_requested": spec["provider"],
                     "label": spec["label"], "model_dir": info["model_dir"],
                     "backbone_mb": info["backbone_mb"], "runtime_mb": info["runtime_mb"],
                     "has_classifier": info["has_classifier"], **result,
                     "load_average_after": load_average()})
    results = {"machine": machine,
               "settings": {"mode": "fast" if fast else "full", **settings,
                            "threads": "library default (torch and onnxruntime: usable cores)",
                            "signal": "seeded white noise, 0.1 RMS, 32 kHz",
                            "reference_cell": list(report.REFERENCE_CELL)},
               "runs": runs, "skipped": skipped,
               "seconds": round(time.perf_counter() - start, 1),
               "load_average_at_end": load_average()}
    results["summary"] = report.summary(runs)
    return results


def write(results: dict[str, Any], out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.json", out / f"{name}.md", out / f"{name}.png"]
    atomic.write_json(paths[0], results)
    atomic.write_text(paths[1], report.markdown(results))
    report.plot(results, paths[2])
    return paths


def default_out(fast: bool) -> Path:
    """Published results go to benchmarks/results; a --fast harness check to the git-ignored
    runs/benchmarks, so CI never leaves untracked files in the repository."""
    return REPO / ("runs/benchmarks" if fast else "benchmarks/results")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, default=[],
                        help="Model dir (repeat); default: models_onnx")
    parser.add_argument("--weights", action="append", type=Path, default=[],
                        help="Checkpoint(s) for the torch reference, matched by sha256")
    parser.add_argument("--out", type=Path, help="Result folder [default: benchmarks/results; "
                                                 "with --fast runs/benchmarks (git-ignored)]")
    parser.add_argument("--name", help="Result file stem [default: <arch>-<cores>c, "
                                       "'-fast' appended in fast mode]")
    parser.add_argument("--fast", action="store_true",
                        help="CI mode: 1 s clips, batch 1, 2 runs — checks the harness only")
    parser.add_argument("--clips", type=lambda v: [float(x) for x in v.split(",")],
                        help="Clip lengths in s, comma-separated [default: 1,5,10; 5 always]")
    parser.add_argument("--batches", type=lambda v: [int(x) for x in v.split(",")],
                        help="Batch sizes, comma-separated [default: 1,8,32; 1 always]")
    parser.add_argument("--budget-s", type=float,
                        help="Seconds of timed runs per cell (at least 3 runs) [default: 2.5]")
    parser.add_argument("--no-torch", action="store_true",
                        help="Skip the torch eager reference (ONNX only)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    models = args.model or [REPO / "models_onnx"]
    for model in models:
        if not (model / "manifest.json").is_file():
            print(f"benchmarks: error: {model}: no manifest.json (not a model dir)",
                  file=sys.stderr)
            return 2
    settings = short_settings(args.clips, args.batches, args.budget_s)
    settings["torch"] = not args.no_torch
    results = run_all(models, args.weights, args.fast, settings)
    cores = results["machine"]["usable_cores"]
    name = args.name or f"{platform.machine()}-{cores}c" + ("-fast" if args.fast else "")
    for path in write(results, args.out or default_out(args.fast), name):
        print(path)
    print(json.dumps(results["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
