"""Results JSON → headline ratios, markdown tables and a PNG plot (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime import atomic

REFERENCE_CELL = (5.0, 1)  # the headline compares a 5 s clip at batch 1


def cell(run: dict[str, Any], clip_s: float, batch: int) -> dict[str, Any] | None:
    for row in run.get("configs", []):
        if float(row["clip_s"]) == clip_s and int(row["batch"]) == batch:
            return row
    return None


def find(runs: list[dict[str, Any]], backbone: str, engine: str, precision: str,
         provider: str = "cpu") -> dict[str, Any] | None:
    for run in runs:
        if (run["backbone"], run["engine"], run["precision"]) == (backbone, engine, precision) \
                and (engine == "torch" or run["provider_requested"] == provider):
            return run
    return None


def _ratio(a: dict | None, b: dict | None) -> float | None:
    return None if a is None or b is None else a["median_s"] / b["median_s"]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-ups at the reference cell (5 s clip, batch 1, CPU), per backbone, same run."""
    clip_s, batch = REFERENCE_CELL
    out: dict[str, Any] = {"cell": {"clip_s": clip_s, "batch": batch}}
    medians: dict[str, dict[str, float]] = {}
    for backbone in sorted({r["backbone"] for r in runs}):
        t = find(runs, backbone, "torch", "fp32")
        f = find(runs, backbone, "onnx", "fp32")
        q = find(runs, backbone, "onnx", "int8")
        ct, cf, cq = (cell(r, clip_s, batch) if r else None for r in (t, f, q))
        medians[backbone] = {k: c["median_s"] * 1000 for k, c in
                             (("torch_ms", ct), ("onnx_fp32_ms", cf), ("onnx_int8_ms", cq)) if c}
        out[backbone] = {**medians[backbone],
                         "onnx_fp32_vs_torch_speedup": _ratio(ct, cf),
                         "int8_vs_fp32_speedup": _ratio(cf, cq),
                         "backbone_mb": {"fp32": f["backbone_mb"] if f else None,
                                         "int8": q["backbone_mb"] if q else None}}
        for name, run in (("fp32", f), ("int8", q)):
            if run and run.get("daemon"):
                out[backbone][f"daemon_{name}_ms_per_audio_s"] = {
                    str(d["threads_setting"]): d["compute_ms_per_audio_s"] for d in run["daemon"]}
        if f and q:
            out[backbone]["int8_vs_fp32_speedup_1_thread"] = _ratio(
                f.get("reference_1_thread"), q.get("reference_1_thread"))
            d32, d8 = (out[backbone].get(f"daemon_{n}_ms_per_audio_s", {})
                       for n in ("fp32", "int8"))
            out[backbone]["daemon_int8_vs_fp32_speedup"] = {k: d32[k] / d8[k]
                                                            for k in d32 if k in d8}
    if {"cnn14", "mn04"} <= set(medians):
        a, b = medians["cnn14"], medians["mn04"]
        out["cnn14_over_mn04_latency"] = {k: a[k] / b[k] for k in a if k in b}
    return out


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    """Tables: per-engine overview, daemon compute per audio-second, all latency cells."""
    m = results["machine"]
    runs = results["runs"]
    lines = [f"Machine: {m['cpu']}, {m['usable_cores']} cores, {m['memory_gib']} GiB; "
             f"python {m['python']}, onnxruntime {m['versions']['onnxruntime']}, "
             f"torch {m['versions']['torch']}; providers {', '.join(m['onnxruntime_providers'])}"
             f". Mode: {results['settings']['mode']}.", "",
             "| backbone | precision | engine | provider | start-up s | backbone MB | "
             "runtime MB | peak RSS while loading MB |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['backbone']} | {r['precision']} | {r['engine']} | {r['provider']} | "
                     f"{r['startup_s']:.2f} | {r['backbone_mb']:.1f} | {r['runtime_mb']:.1f} | "
                     f"{r['peak_rss_load_mb']:.0f} |")
    daemon_rows = [(r, d) for r in runs for d in r.get("daemon", [])]
    if daemon_rows:
        lines += ["", "Daemon compute per audio-second (hop 1 s, window 5 s; the runtime's own "
                  "DetectorStream.push of one chunk: backbone on the chunk, the chunk and the "
                  "5-chunk window pooled and classified):", "",
                  "| backbone | precision | threads | median ms per audio-s | p95 ms | "
                  "× real time | other procs (cores) |", "|---|---|---|---|---|---|---|"]
        for r, d in daemon_rows:
            lines.append(f"| {r['backbone']} | {r['precision']} | {d['threads']} "
                         f"({d['threads_setting']}) | {d['compute_ms_per_audio_s']:.1f} | "
                         f"{d['p95_ms_per_audio_s']:.1f} | {d['x_realtime']:.0f} | "
                         f"{_fmt(d.get('other_processes_cores'))} |")
    lines += _int8_lines(results.get("summary", {}))
    lines += ["", "| backbone | precision | engine | clip s | batch | median ms | p95 ms | "
              "clips/s | × real time | peak RSS MB | runs | other procs (cores) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        for c in r["configs"]:
            lines.append(f"| {r['backbone']} | {r['precision']} | {r['label']} | "
                         f"{c['clip_s']:g} | {c['batch']} | {c['median_s'] * 1000:.1f} | "
                         f"{c['p95_s'] * 1000:.1f} | {c['clips_per_s']:.2f} | "
                         f"{c['x_realtime']:.1f} | {c['peak_rss_mb']:.0f} | {c['repeats']} | "
                         f"{_fmt(c.get('other_processes_cores'))} |")
    if results.get("skipped"):
        lines += ["", "Skipped:"] + [f"- {s['label']}: {s['reason']}" for s in results["skipped"]]
    return "\n".join(lines) + "\n"


def _int8_lines(summary: dict[str, Any]) -> list[str]:
    """int8 vs fp32 speed-ups of one run: the 5 s clip (default threads and 1 thread) and the
    daemon's compute per audio-second."""
    rows = [(b, s) for b, s in summary.items()
            if isinstance(s, dict) and s.get("int8_vs_fp32_speedup") is not None]
    if not rows:
        return []
    lines = ["", "int8 vs fp32, this run (fp32 time / int8 time, medians; ONNX CPU):", "",
             "| backbone | 5 s clip, default threads | 5 s clip, 1 thread | daemon, 1 thread | "
             "daemon, default threads |", "|---|---|---|---|---|"]
    for backbone, s in rows:
        daemon = s.get("daemon_int8_vs_fp32_speedup", {})
        lines.append(f"| {backbone} | {_fmt(s['int8_vs_fp32_speedup'])}× | "
                     f"{_fmt(s.get('int8_vs_fp32_speedup_1_thread'))}× | "
                     f"{_fmt(daemon.get('1'))}× | {_fmt(daemon.get('default'))}× |")
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """× real time per (clip, batch) cell, one line per engine, one panel per backbone."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = sorted({r["backbone"] for r in results["runs"]})
    fig, axes = plt.subplots(1, max(1, len(backbones)), figsize=(6.5 * max(1, len(backbones)),
                                                                  4.2), squeeze=False)
    for ax, backbone in zip(axes[0], backbones, strict=False):
        for r in (r for r in results["runs"] if r["backbone"] == backbone):
            labels = [f"{c['clip_s']:g}s×{c['batch']}" for c in r["configs"]]
            ax.plot(labels, [c["x_realtime"] for c in r["configs"]], marker="o",
                    label=f"{r['precision']} {r['label']}")
        ax.set_yscale("log")
        ax.set_title(f"{backbone}: throughput (higher is better)")
        ax.set_xlabel("clip length × batch")
        ax.set_ylabel("× real time (audio s per compute s)")
        ax.grid(alpha=0.3, which="both")
        ax.tick_params(axis="x", rotation=45)
        ax.legend(fontsize=8)
    fig.suptitle(f"{results['machine']['cpu']}, {results['machine']['usable_cores']} cores")
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
