"""Load-time memory: peak RSS while the device loads a model dir vs resident while it streams.

``python -m benchmarks.load_memory --model DIR [--model DIR ...] [--causes] [--out DIR]``

Each measurement runs in a fresh process (``--child``), so its VmHWM is its own:

- ``base``: VmRSS after importing the runtime, before loading;
- ``peak_load``: VmHWM right after ``Detector(model_dir)`` (every session the device opens,
  sha256 checks included) — the number that decides whether a small board survives start-up;
- ``resident``: VmRSS after streaming 6 s of audio through ``DetectorStream`` (the daemon's own
  path), split into anonymous and file-backed (memory-mapped weights: clean pages the kernel can
  drop and re-read under pressure);
- ``peak_total``: VmHWM at the end (load + streaming).

``--causes`` (for every fp32 model dir given) also measures the backbone graph alone, the
way it was loaded before and each fix separately: one self-contained file vs weights in
``backbone.onnx.data`` (memory-mapped), each with onnxruntime's NCHWc layout transformer on or
off. Writes ``load-memory-<arch>.{json,md,png}`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STREAM_S = 6.0


def status_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def child_model_dir(model_dir: str, threads: int | None) -> dict[str, Any]:
    """Peak while ``Detector`` loads ``model_dir``, then resident after a 6 s stream."""
    import numpy as np

    from edge_runtime.detector import Detector
    from edge_runtime.features import embed_audio
    from edge_runtime.manifest import load_manifest

    rng = np.random.default_rng(0)
    base = status_mb()
    if "classifier" in load_manifest(model_dir).files:
        detector = Detector(model_dir, provider="cpu", threads=threads)
        loaded = status_mb()
        stream = detector.stream()
        block = int(0.1 * detector.sample_rate)
        for _ in range(int(STREAM_S / 0.1)):
            stream.push((0.1 * rng.standard_normal(block)).astype(np.float32))
    else:  # an export without classifier: the same sessions, embeddings only
        from edge_runtime.sessions import load_sessions

        sessions = load_sessions(model_dir, provider="cpu", threads=threads)
        loaded = status_mb()
        audio = (0.1 * rng.standard_normal(int(STREAM_S * sessions.sample_rate)))
        embed_audio(sessions, audio.astype(np.float32))
    end = status_mb()
    return {"base_mb": base["VmRSS"], "peak_load_mb": loaded["VmHWM"],
            "after_load_mb": loaded["VmRSS"], "resident_mb": end["VmRSS"],
            "resident_anon_mb": end["RssAnon"], "resident_file_mb": end["RssFile"],
            "peak_total_mb": end["VmHWM"]}


def child_graph(path: str, nchwc: bool) -> dict[str, Any]:
    """One backbone graph opened as the runtime opens it, NCHWc forced on or off."""
    import numpy as np
    import onnxruntime as ort

    from edge_runtime.providers import session_options

    base = status_mb()
    sess = ort.InferenceSession(path, sess_options=session_options(None),
                                providers=["CPUExecutionProvider"],
                                disabled_optimizers=[] if nchwc else ["NchwcTransformer"])
    loaded = status_mb()
    spec = sess.get_inputs()[0]
    # a 1 s chunk as this graph reads it: the waveform, or (a backbone after frontend.onnx)
    # its log-mel [1, mels, 100 frames]
    shape = (1, 32000) if len(spec.shape) == 2 else (1, spec.shape[1], 100)
    x = (0.1 * np.random.default_rng(0).standard_normal(shape)).astype(np.float32)
    for _ in range(int(STREAM_S)):
        sess.run(None, {sess.get_inputs()[0].name: x})
    end = status_mb()
    return {"base_mb": base["VmRSS"], "peak_load_mb": loaded["VmHWM"],
            "resident_mb": end["VmRSS"], "resident_anon_mb": end["RssAnon"],
            "resident_file_mb": end["RssFile"], "peak_total_mb": end["VmHWM"]}


def run_child(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "benchmarks.load_memory", "--child", *args],
                         capture_output=True, text=True, timeout=900, env=env)
    if res.returncode:
        raise RuntimeError(f"load_memory child {args} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def describe(model_dir: Path) -> dict[str, Any]:
    from benchmarks.engines import model_info

    info = model_info(model_dir)
    return {"model_dir": str(model_dir), "backbone": info["backbone"],
            "precision": info["precision"], "runtime_mb": round(info["runtime_mb"], 1)}


def causes(model_dir: Path, work: Path) -> list[dict[str, Any]]:
    """Backbone alone: single file vs external data, NCHWc on vs off."""
    import onnx

    from edge_runtime.manifest import load_manifest
    from export.reproducible import save_reproducible

    manifest = load_manifest(model_dir)
    src = model_dir / manifest.files["backbone"].path
    single = work / "backbone_single.onnx"
    external = work / "backbone_external.onnx"
    model = onnx.load(str(src))
    save_reproducible(model, single, external=False)
    save_reproducible(model, external, external=True)
    del model
    rows = []
    for label, path in (("one file", single), ("weights in .data (mmap)", external)):
        for nchwc in (True, False):
            row = run_child(["graph", str(path), "1" if nchwc else "0"])
            rows.append({"backbone": manifest.backbone.name, "file": label,
                         "nchwc": nchwc, **row})
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Load-time memory, {result['machine']} (MB; fresh process per row; "
             f"load average {result['load_average']})", "",
             "| model | precision | files MB | base | peak while loading | resident after 6 s "
             "stream (anon + file) | peak / resident |", "|---|---|---|---|---|---|---|"]
    for r in result["models"]:
        lines.append(f"| {r['backbone']} | {r['precision']} | {r['runtime_mb']:.1f} | "
                     f"{r['base_mb']:.0f} | {r['peak_load_mb']:.0f} | {r['resident_mb']:.0f} "
                     f"({r['resident_anon_mb']:.0f} + {r['resident_file_mb']:.0f}) | "
                     f"{r['peak_load_mb'] / r['resident_mb']:.2f} |")
    if result.get("causes"):
        lines += ["", "Backbone graph alone, by cause:", "",
                  "| backbone | weights | NCHWc | peak while loading | resident (anon + file) |",
                  "|---|---|---|---|---|"]
        for r in result["causes"]:
            lines.append(f"| {r['backbone']} | {r['file']} | {'on' if r['nchwc'] else 'off'} | "
                         f"{r['peak_load_mb']:.0f} | {r['resident_mb']:.0f} "
                         f"({r['resident_anon_mb']:.0f} + {r['resident_file_mb']:.0f}) |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    labels = [f"{r['backbone']} {r['precision']}" for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([i - 0.2 for i in x], [r["peak_load_mb"] for r in rows], 0.4, label="peak loading")
    ax.bar([i + 0.2 for i in x], [r["resident_mb"] for r in rows], 0.4, label="resident")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("MB")
    ax.legend()
    ax.set_title("Load-time memory (edge_runtime Detector, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "dir":
            out = child_model_dir(rest[0], int(rest[1]) if rest[1] != "-" else None)
        else:
            out = child_graph(rest[0], rest[1] == "1")
        print(json.dumps({k: round(v, 1) for k, v in out.items()}))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=Path, required=True)
    parser.add_argument("--causes", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    from benchmarks.machine import machine_info
    from edge_runtime.atomic import write_json

    result: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
                              "machine_info": machine_info(),
                              "load_average": [round(v, 1) for v in os.getloadavg()],
                              "threads": args.threads, "models": [], "causes": []}
    for model_dir in args.model:
        row = run_child(["dir", str(model_dir), str(args.threads or "-")])
        result["models"].append({**describe(model_dir), **row})
        print(result["models"][-1], flush=True)
    if args.causes:
        for model_dir in args.model:
            if describe(model_dir)["precision"] == "fp32":
                with tempfile.TemporaryDirectory() as work:
                    result["causes"] += causes(model_dir, Path(work))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"load-memory-{platform.machine()}"
    write_json(stem.with_suffix(".json"), result)
    stem.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    plot(result, stem.with_suffix(".png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
