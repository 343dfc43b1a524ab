"""Spark vs one process: audio-hours scored per wall-hour over a folder of clips, same run.

```bash
python -m benchmarks.spark_throughput --model MODEL_DIR [--input ../shared/esc10/audio] \
    [--master local[2]] [--rounds 1] [--out benchmarks/results]
```

Each round runs, as fresh processes and exactly as a user would, ``edge-detect --input DIR --once``
(one process, onnxruntime's default threads) and then ``edge-detect --input DIR --once --spark
MASTER`` (one onnxruntime thread per Spark task), both writing their events; the events are
compared. Measured per run: wall time end to end, Spark's start-up (session + model shipping), the
time the runtime itself spent scoring (``Runner`` compute, summed over files), and how many cores
the whole machine kept busy meanwhile (other processes included: the machine is shared).

Per-file overhead = (wall × slots − summed scoring time) / files: what each file costs beyond
the runtime's own work — decoding is part of the scoring time; Spark adds task scheduling,
the Arrow hand-over, the temporary file each executor decodes from, Python worker and model
start-up, and the ordered read-back on the driver.
Output: ``<out>/<name>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import cpu_busy_s
from benchmarks.machine import machine_info, version
from edge_runtime.atomic import write_json
from edge_runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
SINGLE_DONE = re.compile(r"done: (\d+) stream\(s\), (\d+) failed, (\d+) event\(s\); "
                         r"([\d.]+) s of audio in ([\d.]+) s")
SPARK_START = re.compile(r"; ([\d.]+) s to start")
SPARK_DONE = re.compile(r"done: (\d+) file\(s\), (\d+) failed, (\d+) event\(s\); ([\d.]+) s of "
                        r"audio, ([\d.]+) s of executor compute; ([\d.]+) s wall")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def timed(args: list[str]) -> tuple[str, float, float | None]:
    """Run ``edge-detect`` with ``args``; (stderr, wall s, machine busy cores meanwhile)."""
    busy0, t0 = cpu_busy_s(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=3600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    busy1 = cpu_busy_s()
    if proc.returncode != 0:
        raise RuntimeError(f"edge-detect {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr[-2000:]}")
    cores = None if busy0 is None or busy1 is None else round((busy1 - busy0) / wall, 2)
    return proc.stderr, wall, cores


def event_keys(path: Path) -> list[tuple]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append((Path(rec["source"]).name, rec.get("state"), rec["offset_start_s"],
                    rec["offset_end_s"], rec.get("class") or ""))
    return sorted(out)


def one_round(model: Path, folder: Path, master: str, slots: int, tmp: Path) -> dict[str, Any]:
    common = ["--model", str(model), "--input", str(folder), "--once"]
    single_ev, spark_ev = tmp / "single.jsonl", tmp / "spark.jsonl"
    for p in (single_ev, spark_ev):
        p.unlink(missing_ok=True)
    err, wall, cores = timed([*common, "--events", str(single_ev)])
    m = SINGLE_DONE.search(err)
    files, failed, events, audio_s, compute_s = int(m[1]), int(m[2]), int(m[3]), float(m[4]), \
        float(m[5])
    single = {"files": files, "failed": failed, "events": events, "audio_s": audio_s,
              "wall_s": round(wall, 2), "scoring_s": compute_s, "machine_busy_cores": cores,
              "slots": 1, "start_s": None}
    err, wall, cores = timed([*common, "--spark", master, "--events", str(spark_ev)])
    m, s = SPARK_DONE.search(err), SPARK_START.search(err)
    spark = {"files": int(m[1]), "failed": int(m[2]), "events": int(m[3]),
             "audio_s": float(m[4]), "scoring_s": float(m[5]), "wall_s": round(wall, 2),
             "start_s": float(s[1]), "machine_busy_cores": cores, "slots": slots}
    for run in (single, spark):
        work_wall = run["wall_s"] - (run["start_s"] or 0.0)
        run["audio_h_per_wall_h"] = round(run["audio_s"] / run["wall_s"], 1)
        run["audio_h_per_wall_h_after_start"] = round(run["audio_s"] / work_wall, 1)
        run["overhead_ms_per_file"] = round(
            1000 * (work_wall * run["slots"] - run["scoring_s"]) / max(1, run["files"]), 1)
    return {"single": single, "spark": spark,
            "events_equal": event_keys(single_ev) == event_keys(spark_ev),
            "load_average_after": load_average()}


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(mode: str, key: str) -> float | None:
        values = [r[mode][key] for r in rounds if r[mode][key] is not None]
        return round(statistics.median(values), 2) if values else None

    out: dict[str, Any] = {}
    for mode in ("single", "spark"):
        out[mode] = {k: med(mode, k) for k in ("wall_s", "start_s", "scoring_s",
                                                 "audio_h_per_wall_h",
                                                 "audio_h_per_wall_h_after_start",
                                                 "overhead_ms_per_file", "machine_busy_cores")}
    out["spark_over_single_throughput"] = round(
        out["spark"]["audio_h_per_wall_h"] / out["single"]["audio_h_per_wall_h"], 2)
    out["spark_over_single_after_start"] = round(
        out["spark"]["audio_h_per_wall_h_after_start"]
        / out["single"]["audio_h_per_wall_h_after_start"], 2)
    out["events_equal_all_rounds"] = all(r["events_equal"] for r in rounds)
    return out


def markdown(results: dict[str, Any]) -> str:
    m, s, st = results["machine"], results["summary"], results["settings"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB; python "
             f"{m['python']}, onnxruntime {m['versions']['onnxruntime']}, pyspark "
             f"{st['pyspark']}; niceness {st['niceness']}, load average before "
             f"{st['load_average_before']}. Model: {st['model']} ({st['backbone']}). Input: "
             f"{st['files']} "
             f"clips, {st['audio_h']:.3f} h of audio. Spark master {st['master']}. Medians of "
             f"{len(results['rounds'])} round(s).", "",
             "| mode | wall s | Spark start s | scoring s (summed) | audio-h per wall-h | "
             "… after start-up | overhead ms/file | machine busy cores |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, label in (("single", "one process (`--once`)"),
                        ("spark", f"Spark `{st['master']}`")):
        r = s[mode]
        lines.append(f"| {label} | {r['wall_s']:.1f} | "
                     f"{'–' if r['start_s'] is None else format(r['start_s'], '.1f')} | "
                     f"{r['scoring_s']:.1f} | {r['audio_h_per_wall_h']:.0f} | "
                     f"{r['audio_h_per_wall_h_after_start']:.0f} | "
                     f"{r['overhead_ms_per_file']:.0f} | {r['machine_busy_cores']} |")
    lines += ["", f"Spark / one process: **{s['spark_over_single_throughput']:.2f}×** end to end, "
              f"{s['spark_over_single_after_start']:.2f}× after Spark's start-up. Events "
              f"identical (file, state, start, end, class): {s['events_equal_all_rounds']}.", "",
              results["note"], ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = results["summary"]
    labels = ["one process", f"Spark {results['settings']['master']}"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    x = range(2)
    axes[0].bar([i - 0.2 for i in x], [s["single"]["audio_h_per_wall_h"],
                                       s["spark"]["audio_h_per_wall_h"]], 0.4, label="end to end")
    axes[0].bar([i + 0.2 for i in x], [s["single"]["audio_h_per_wall_h_after_start"],
                                       s["spark"]["audio_h_per_wall_h_after_start"]], 0.4,
                label="after start-up")
    axes[0].set_xticks(list(x), labels)
    axes[0].set_ylabel("audio-hours per wall-hour (higher is better)")
    axes[0].legend(fontsize=8)
    axes[1].bar(labels, [s["single"]["overhead_ms_per_file"], s["spark"]["overhead_ms_per_file"]])
    axes[1].set_ylabel("overhead per file, ms (slot time beyond scoring)")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    m = results["machine"]
    fig.suptitle(f"{results['settings']['files']} clips, {m['cpu']}, {m['usable_cores']} cores "
                 "(shared machine)")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


NOTE = ("This machine is shared with other jobs: the machine-busy column counts every process, "
        "so cores beyond what a mode can use were other work, and wall times carry that noise. "
        "Spark runs one onnxruntime thread per task (its tasks are the parallelism); the single "
        "process uses onnxruntime's default (all cores). Spark's start-up (JVM, session, model "
        "shipped with addFile) is paid once per job, its per-file overhead on every file. "
        "Scoring time is summed over files, so with 2 slots busy at once it can reach twice "
        "the wall time; on 2 cores the two workers also share them with Spark's JVM.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark_throughput",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="Model dir with a classifier")
    parser.add_argument("--input", type=Path, default=REPO.parent / "shared" / "esc10" / "audio",
                        help="Folder of clips [default: ../shared/esc10/audio, 400 clips]")
    parser.add_argument("--master", default="local[2]", help="Spark master [local[2]]")
    parser.add_argument("--rounds", type=int, default=1, help="Rounds (single, then Spark)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--name", help="Result stem [default: spark-<arch>-<cores>c]")
    args = parser.parse_args(argv)
    from edge_runtime.spark_job import check_master

    master = check_master(args.master)
    files = sorted(p for p in args.input.iterdir() if p.suffix.lower() in {".flac", ".wav"})
    if len(files) < 400:
        print(f"spark_throughput: note: {args.input} has {len(files)} clips (< 400)",
              file=sys.stderr)
    rounds = []
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="spark-bench-") as tmp:
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds} …", file=sys.stderr)
            rounds.append(one_round(args.model, args.input, master.url, master.slots or 1,
                                    Path(tmp)))
    audio_s = rounds[0]["single"]["audio_s"]
    machine = machine_info()
    results = {"machine": machine,
               "settings": {"model": args.model.name,
                            "backbone": load_manifest(args.model).backbone.name,
                            "input": str(args.input), "files": len(files),
                            "audio_h": audio_s / 3600, "master": master.url,
                            "pyspark": version("pyspark"), "niceness": os.nice(0),
                            "load_average_before": load_before},
               "rounds": rounds, "note": NOTE}
    results["summary"] = summarize(rounds)
    name = args.name or f"spark-{platform.machine()}-{machine['usable_cores']}c"
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", results)
    md = args.out / f"{name}.md"
    tmp_md = md.with_name(f".{md.name}.tmp")
    tmp_md.write_text(markdown(results), encoding="utf-8")
    tmp_md.replace(md)
    plot(results, args.out / f"{name}.png")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
