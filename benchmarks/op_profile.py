"""``python -m benchmarks.op_profile --model DIR [--model DIR ...] [--threads 1] [--out DIR]``

Where a backbone's time goes, from onnxruntime's own profiler (``SessionOptions.
enable_profiling``): per-kernel times of ``--runs`` runs after one warm-up, on a 5 s clip and
on one 1 s chunk (the daemon's hop), summed per part and op type. Parts: ``front end`` (a
separate ``frontend.onnx``, or the log-mel nodes ``training.quantize.front_end_nodes`` finds,
kept float in int8 models), ``Q/DQ`` (Quantize/DequantizeLinear left between float and int8
parts) and ``network``. The sessions are the runtime's own (``edge_runtime.providers``:
options, disabled optimisers). Writes ``op-profile-<arch>-<cores>c.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from benchmarks.harness import test_signal
from benchmarks.machine import machine_info
from edge_runtime import atomic, providers
from edge_runtime.manifest import load_manifest

REPO = Path(__file__).resolve().parents[1]
QDQ = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
_SUFFIX = re.compile(r"(_token_\d+)?_kernel_time$")


def front_end_names(model_dir: Path) -> set[str]:
    """Node names of the backbone's float front end (the int8 manifest lists them); with a
    separate front end graph, the backbone nodes up to its first conv."""
    manifest = load_manifest(model_dir)
    if manifest.quantization and manifest.quantization.get("excluded_nodes"):
        return set(manifest.quantization["excluded_nodes"])
    from training.quantize import front_end_nodes

    graph = onnx.load(str(manifest.path(model_dir, "backbone")), load_external_data=False)
    return set(front_end_nodes(graph, in_graph="frontend" not in manifest.files))


def profile(path: Path, audio: np.ndarray, threads: int, runs: int) -> list[dict[str, Any]]:
    """Kernel events (node name, op type, µs) of ``runs`` runs after one warm-up run."""
    opts = providers.session_options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = ort.InferenceSession(str(path), sess_options=opts,
                                    providers=["CPUExecutionProvider"],
                                    disabled_optimizers=providers.disabled_optimizers(path))
        name = sess.get_inputs()[0].name
        for _ in range(runs + 1):
            sess.run(None, {name: audio})
        events = json.loads(Path(sess.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after = starts[1] if len(starts) > 1 else 0  # skip the warm-up run
    return [{"node": _SUFFIX.sub("", e["name"]), "op": e["args"]["op_name"], "us": e["dur"]}
            for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
            and e["ts"] >= after]


def one_run(path: Path, array: np.ndarray) -> np.ndarray:
    """``path``'s output for ``array`` (the backbone's input after a separate front end)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: array})[0]


def table(events: list[dict[str, Any]], front: set[str], runs: int) -> list[dict[str, Any]]:
    """Per (part, op type): ms per run and share of the kernel time, largest first."""
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        part = "Q/DQ" if e["op"] in QDQ else "front end" if e["node"] in front else "network"
        sums[(part, e["op"])] += e["us"]
    total = sum(sums.values()) or 1.0
    rows = [{"part": part, "op": op, "ms": us / runs / 1000, "share": us / total}
            for (part, op), us in sums.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def run(models: list[Path], threads: int, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": machine_info(), "threads": threads, "runs": runs,
                           "profiles": []}
    for model_dir in models:
        manifest = load_manifest(model_dir)
        front = front_end_names(model_dir)
        for label, seconds in (("5 s clip", 5.0), ("1 s chunk", None)):
            audio = test_signal(1, seconds) if seconds else test_signal(
                1, manifest.streaming.chunk_samples / manifest.sample_rate)
            events = []
            if "frontend" in manifest.files:  # its own graph: every node is front end
                frontend = manifest.path(model_dir, "frontend")
                events = profile(frontend, audio, threads, runs)
                front = front | {e["node"] for e in events}
                audio = one_run(frontend, audio)
            events += profile(manifest.path(model_dir, "backbone"), audio, threads, runs)
            rows = table(events, front, runs)
            out["profiles"].append({
                "model_dir": str(model_dir), "backbone": manifest.backbone.name,
                "precision": "int8" if manifest.quantized else "fp32", "input": label,
                "kernel_ms": sum(r["ms"] for r in rows), "rows": rows,
                "parts": {p: sum(r["share"] for r in rows if r["part"] == p)
                          for p in ("front end", "Q/DQ", "network")}})
    return out


def markdown(results: dict[str, Any], top: int = 8) -> str:
    m = results["machine"]
    lines = [f"onnxruntime profile, {m['cpu']}, onnxruntime {m['versions']['onnxruntime']}, "
             f"{results['threads']} thread(s), mean of {results['runs']} runs after a warm-up; "
             "kernel time only (no session overhead).", ""]
    for p in results["profiles"]:
        parts = ", ".join(f"{k} {100 * v:.0f} %" for k, v in p["parts"].items())
        lines += [f"**{p['backbone']} {p['precision']}, {p['input']}**: {p['kernel_ms']:.1f} ms "
                  f"of kernels ({parts})", "", "| part | op type | ms | share |",
                  "|---|---|---|---|"]
        lines += [f"| {r['part']} | {r['op']} | {r['ms']:.2f} | {100 * r['share']:.1f} % |"
                  for r in p["rows"][:top]]
        rest = p["rows"][top:]
        if rest:
            lines.append(f"| | {len(rest)} more op types | {sum(r['ms'] for r in rest):.2f} | "
                         f"{100 * sum(r['share'] for r in rest):.1f} % |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.op_profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, required=True,
                        help="Model dir (repeat)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    for model in args.model:
        if not (model / "manifest.json").is_file():
            print(f"op_profile: error: {model}: no manifest.json (not a model dir)",
                  file=sys.stderr)
            return 2
    results = run(args.model, args.threads, args.runs)
    name = f"op-profile-{platform.machine()}-{results['machine']['usable_cores']}c"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out / f"{name}.json", results)
    atomic.write_text(args.out / f"{name}.md", markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
