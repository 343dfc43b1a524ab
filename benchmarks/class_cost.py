"""Daemon cost and memory of model dirs side by side (same run, same machine), e.g. a binary
model against a class model built on the same export:

    python -m benchmarks.class_cost --model BINARY_DIR --model CLASS_DIR --out benchmarks/results

Each model runs in its own process (its peak RSS is its own): load, then the daemon's hop — the
runtime's own ``DetectorStream.push`` of one 1 s chunk, or of ``window_stride`` chunks
(``engines.daemon_hop_runner``) — timed
at 1 thread and at onnxruntime's default threads; VmHWM (peak while loading and streaming) and
VmRSS after the 1-thread run (before the second setting loads the model again). With
``--rounds N`` the models take turns N times (A B A B ...): the table gives each model's median
over the rounds and the median of the per-round ratios to the first model, so a burst of load
from elsewhere on a shared machine moves one round, not the comparison. Writes
``class_cost.json``, ``class_cost.md`` and ``class_cost.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Budget, measure, peak_rss_mb, stats


def resident_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def job(model_dir: Path, budget_s: float) -> dict[str, Any]:
    """Time one model's hop (1 thread, default threads) in this process."""
    from benchmarks import engines

    out: dict[str, Any] = {"model": str(model_dir), "hop": []}
    budget = Budget(warmup=3, min_repeats=20, max_repeats=400, budget_s=budget_s)
    for threads in (1, None):
        sessions = engines.onnx_sessions(model_dir, "cpu", threads)
        out.setdefault("classes", sessions.manifest.classes is not None)
        out.setdefault("window_embedding", sessions.window_embedding)
        out.setdefault("window_stride", sessions.window_stride)
        out.setdefault("frontend_graph", sessions.frontend is not None)
        out.setdefault("gain_graph", sessions.gain is not None)
        run, hop_s = engines.daemon_hop_runner(sessions)
        times, others = measure(lambda run=run: run(None), budget, quiet_cores=None)
        row = stats(times, hop_s, 1)
        out["hop"].append({"threads": threads or "default",
                           "ms_per_audio_s": 1000 * row["median_s"] / hop_s,
                           "p95_ms_per_audio_s": 1000 * row["p95_s"] / hop_s,
                           "repeats": len(times), "other_processes_cores": others})
        if threads == 1:  # memory of one loaded model, before the second setting loads it again
            out["peak_rss_mb"] = peak_rss_mb()
            out["resident_mb"] = resident_mb()
    return out


def combine(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model from its runs in every round: medians of the timings and memory, the
    per-round ratios to the first model (1 thread) and their median."""
    rows = []
    for runs in zip(*rounds, strict=True):
        row = dict(runs[0])
        row["hop"] = [{**{k: float(np.median([r["hop"][i][k] for r in runs]))
                          for k in ("ms_per_audio_s", "p95_ms_per_audio_s", "repeats",
                                    "other_processes_cores") if k in h},
                       "threads": h["threads"],
                       "rounds_ms_per_audio_s": [r["hop"][i]["ms_per_audio_s"] for r in runs]}
                      for i, h in enumerate(runs[0]["hop"])]
        for key in ("peak_rss_mb", "resident_mb"):
            row[key] = float(np.median([r[key] for r in runs]))
        rows.append(row)
    for k, row in enumerate(rows):
        ratios = [rnd[k]["hop"][0]["ms_per_audio_s"] / rnd[0]["hop"][0]["ms_per_audio_s"]
                  for rnd in rounds]
        row["ratio_to_first_1_thread"] = float(np.median(ratios))
        row["rounds_ratio_to_first_1_thread"] = ratios
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | classes | window | ms / audio-s, 1 thread | default threads | "
             "vs first (1 thread) | peak RSS MB | resident MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one, default = r["hop"][0]["ms_per_audio_s"], r["hop"][1]["ms_per_audio_s"]
        ratio = r["ratio_to_first_1_thread"]
        lines.append(f"| {Path(r['model']).name} | {'yes' if r['classes'] else 'no'} | "
                     f"{r['window_embedding']}, every {r.get('window_stride', 1)} chunk(s)"
                     f"{', frontend.onnx' if r.get('frontend_graph') else ''}"
                     f"{', gain.onnx' if r.get('gain_graph') else ''} | "
                     f"{one:.2f} | {default:.2f} | {ratio:.2f}× | "
                     f"{r['peak_rss_mb']:.0f} | {r['resident_mb']:.0f} |")
    lines += ["", "ms columns: each model's median over the rounds; \"vs first\": the median of "
              "its per-round ratios to the first model (a busy round moves both sides)."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = [Path(r["model"]).name for r in rows]
    ax.bar(names, [r["hop"][0]["ms_per_audio_s"] for r in rows])
    ax.set_ylabel("ms of compute per audio-second (1 thread)")
    ax.set_title("edge-detect daemon hop cost")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp/class_cost"))
    ap.add_argument("--budget-s", type=float, default=4.0, help="Timing budget per setting.")
    ap.add_argument("--rounds", type=int, default=5, choices=range(1, 51), metavar="[1-50]",
                    help="Times the models take turns; medians over the rounds.")
    ap.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        print(json.dumps(job(args.job, args.budget_s)), flush=True)
        return
    rounds = []
    for k in range(args.rounds):
        runs = []
        for model in args.model:
            done = subprocess.run([sys.executable, "-m", "benchmarks.class_cost", "--model",
                                   str(model), "--job", str(model),
                                   "--budget-s", str(args.budget_s)],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {k + 1}/{args.rounds} {model}: "
                  f"{runs[-1]['hop'][0]['ms_per_audio_s']:.2f} ms/audio-s", file=sys.stderr)
        rounds.append(runs)
    rows = combine(rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks.machine import machine_info

    result = {"machine": machine_info(), "rounds": args.rounds, "models": rows}
    (args.out / "class_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "class_cost.md").write_text(markdown(rows))
    plot(rows, args.out / "class_cost.png")
    print(markdown(rows))


if __name__ == "__main__":
    main()
