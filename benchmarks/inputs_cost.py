"""Cost of the inputs: an idle watched folder, one vs two named sources, the bad-input corpus.

```bash
python -m benchmarks.inputs_cost --model models_onnx [--files 10000] [--out benchmarks/results]
```

Measured: CPU used by the folder watcher while 10,000 already-read files sit in the folder
(inotify, and the polling fallback), as a share of one core; peak RSS (the process's own VmHWM)
of ``edge-detect`` with one source (60 s of PCM on stdin) and with two named sources (the same
stdin plus a watched folder holding the same audio as a file), with one set of ONNX sessions;
peak RSS and wall time of ``--once`` over the generated bad-input corpus (tests/bad_corpus.py).
Output: ``<out>/inputs-<arch>-<cores>c.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edge_runtime.watch import FolderWatcher
from tests import procmem
from tests.bad_corpus import write_corpus
from tests.runtime_model import SR, hiss, tone


def watcher_idle_cpu(files: int, seconds: float, inotify: bool) -> float:
    """Share of one core the watcher uses while ``files`` read files sit still."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for i in range(files):
            (d / f"{i:06d}.wav").write_bytes(b"x")
        stop = threading.Event()
        watcher = FolderWatcher(d, settle_s=0.0, stop=stop, use_inotify=inotify)
        it = iter(watcher)
        for _ in range(files):
            next(it)
        thread = threading.Thread(target=lambda: [None for _ in it], daemon=True)
        cpu0, wall0 = time.process_time(), time.monotonic()
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(10)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        watcher.close()
    return cpu / wall


def run(args: list[str], stdin: Path | None = None) -> dict[str, Any]:
    started = time.monotonic()
    with open(stdin or os.devnull, "rb") as handle:
        res = subprocess.run(procmem.command(*args), stdin=handle, capture_output=True,
                             timeout=600)
    err, peak = procmem.split(res.stderr.decode("utf-8", "replace"))
    if res.returncode != 0:
        raise SystemExit(f"edge-detect failed ({res.returncode}): {err[-2000:]}")
    return {"peak_rss_mb": round(peak / 1024, 1), "wall_s": round(time.monotonic() - started, 2)}


def markdown(result: dict[str, Any]) -> str:
    w, m = result["watcher_idle"], result["memory"]
    return "\n".join([
        "# Inputs: cost", "",
        f"Model `{result['model']}`; {result['cores']} cores; {result['machine']}.", "",
        f"| watched folder, {w['files']} read files, idle {w['seconds']:.0f} s | % of a core |",
        "|---|---|",
        f"| inotify | {100 * w['inotify_core_share']:.3f} |",
        f"| polling (folder mtime) | {100 * w['polling_core_share']:.3f} |", "",
        "| edge-detect | peak RSS MB | wall s |", "|---|---|---|",
        f"| one source (stdin, 60 s) | {m['one_source']['peak_rss_mb']} "
        f"| {m['one_source']['wall_s']} |",
        f"| two named sources (stdin + folder) | {m['two_sources']['peak_rss_mb']} "
        f"| {m['two_sources']['wall_s']} |",
        f"| bad-input corpus ({m['corpus_files']} files), --once "
        f"| {m['corpus']['peak_rss_mb']} | {m['corpus']['wall_s']} |", "",
        f"Two sources / one source peak RSS: {m['two_over_one']:.2f}.", ""])


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["memory"]
    labels = ["one source", "two sources", "bad corpus"]
    values = [m["one_source"]["peak_rss_mb"], m["two_sources"]["peak_rss_mb"],
              m["corpus"]["peak_rss_mb"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(labels, values, color=["#4c72b0", "#55a868", "#c44e52"])
    ax.set_ylabel("peak RSS (MB)")
    ax.set_title(f"edge-detect inputs, {Path(result['model']).name}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models_onnx"))
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--idle-seconds", type=float, default=15.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    result: dict[str, Any] = {"model": str(args.model), "cores": os.cpu_count(),
                              "machine": f"{platform.machine()} {platform.processor()}".strip()}
    result["watcher_idle"] = {
        "files": args.files, "seconds": args.idle_seconds,
        "inotify_core_share": watcher_idle_cpu(args.files, args.idle_seconds, True),
        "polling_core_share": watcher_idle_cpu(args.files, args.idle_seconds, False)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        audio = np.concatenate([hiss(20.0), tone(3.0), hiss(37.0)])
        pcm = tmp_path / "audio.s16"
        (audio * 32767).astype("<i2").tofile(pcm)
        folder = tmp_path / "folder"
        folder.mkdir()
        sf.write(folder / "audio.wav", audio, SR)
        common = ["--model", str(args.model), "--rate", str(SR), "--once", "--threads", "1"]
        one = run([*common, "--input", "-"], pcm)
        two = run([*common, "--input", "door=-", "--input", f"box={folder}"], pcm)
        corpus = tmp_path / "corpus"
        kinds = write_corpus(corpus)
        bad = run(["--model", str(args.model), "--input", str(corpus), "--once",
                   "--threads", "1"])
    result["memory"] = {"one_source": one, "two_sources": two, "corpus": bad,
                        "corpus_files": len(kinds),
                        "two_over_one": two["peak_rss_mb"] / one["peak_rss_mb"]}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"inputs-{platform.machine()}-{os.cpu_count()}c"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    plot(result, stem.with_suffix(".png"))
    print(markdown(result))


if __name__ == "__main__":
    main()
