"""edge-detect streaming cost, onset→event latency and streamed-vs-offline agreement.

    python -m benchmarks.runtime_cost --model /tmp/ed/model --esc ../shared/esc10 --out /tmp/rc

* compute per audio-second: the daemon's own path (ChunkBuffer → FrameWindow → classifier) over
  ``--seconds`` of ESC audio, with 1 thread and with onnxruntime's default threads; next to it
  the naive path (backbone over the whole 5 s window at every 1 s hop).
* agreement: cosine between each 5 s clip's streamed embedding (5 chunks of 1 s through the
  backbone, frames pooled) and the offline one (the whole clip through the backbone at once).
* latency: safe clip, danger clip, safe clip streamed in 0.1 s blocks; the audio time from the
  danger onset to the block at which the event starts, plus the compute of that block; and how
  far the event's reported start lies from the true onset (chunk localization).

A model dir without a classifier (e.g. ``edge-train export`` output) gets a throw-away logistic
regression fitted on ESC-10 embeddings in ``--out`` (hard links to the ONNX files, no copies).
Workbench code: it may use sklearn; edge_runtime itself never does.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime.detector import Detector
from edge_runtime.events import EventConfig, EventTracker
from edge_runtime.features import chunk_frames, embed_audio, embed_offline, pool_window, to_chunks
from edge_runtime.manifest import ClassifierSpec, load_manifest
from edge_runtime.options import THRESHOLD_FALLBACK
from edge_runtime.sessions import load_sessions

DANGER, SAFE = ("dog", "chainsaw", "crying_baby"), ("rain", "sea_waves", "clock_tick")


def esc_clips(esc: Path) -> list[tuple[Path, int]]:
    with open(esc / "meta" / "esc50.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for r in sorted(rows, key=lambda r: r["filename"]):
        label = 1 if r["category"] in DANGER else 0 if r["category"] in SAFE else None
        path = esc / "audio" / (Path(r["filename"]).stem + ".flac")
        if label is not None and path.exists():
            out.append((path, label))
    return out


def read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32")[0]


def with_classifier(model: Path, clips: list[tuple[Path, int]], out: Path, n: int = 60) -> Path:
    """``model`` if it has a classifier, else a symlinked copy plus a fitted logreg."""
    manifest = load_manifest(model)
    if "classifier" in manifest.files:
        return model
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from training.attach import attach_classifier
    from training.onnx_classifier import CLASSIFIER_OUTPUT, to_onnx

    sessions = load_sessions(model, "cpu", with_classifier=False)
    pick = clips[:: max(1, len(clips) // n)][:n]
    x = np.stack([embed_audio(sessions, read(p))[0][0] for p, _ in pick])
    y = np.array([label for _, label in pick])
    pipe = Pipeline([("s", StandardScaler()), ("c", LogisticRegression(max_iter=3000))]).fit(x, y)
    dest = out / "model_with_classifier"
    attach_classifier(model, dest, to_onnx(pipe, x.shape[1]),
                      ClassifierSpec(kind="logreg (benchmark throw-away)",
                                     threshold=THRESHOLD_FALLBACK, output=CLASSIFIER_OUTPUT))
    return dest


def stream_cost(det: Detector, audio: np.ndarray, block_s: float = 0.1) -> float:
    """Seconds of compute per second of audio through the daemon's streaming path."""
    stream, block = det.stream(), int(block_s * det.sample_rate)
    start = time.perf_counter()
    for i in range(0, audio.size, block):
        stream.push(audio[i : i + block])
    stream.finish()
    return (time.perf_counter() - start) / (audio.size / det.sample_rate)


def naive_cost(det: Detector, audio: np.ndarray, seconds: float = 20.0) -> float:
    """Backbone over the full 5 s window at every hop (what chunk caching avoids)."""
    s = det.sessions
    win = s.chunk_samples * s.window_chunks
    ends = range(win, min(audio.size, int(seconds * det.sample_rate) + win) + 1, s.chunk_samples)
    start = time.perf_counter()
    for end in ends:
        frames = chunk_frames(s, audio[end - win : end].reshape(1, -1))
        det.scorer.danger(pool_window(s, frames))
    return (time.perf_counter() - start) / len(ends)


def agreement(det: Detector, clips: list[tuple[Path, int]], n: int = 40) -> dict[str, float]:
    cos = []
    for path, _ in clips[: n]:
        audio = read(path)
        streamed = embed_audio(det.sessions, audio)[0][0]
        offline = embed_offline(det.sessions, audio)
        cos.append(float(streamed @ offline / (np.linalg.norm(streamed) *
                                               np.linalg.norm(offline) + 1e-12)))
    return {"clips": len(cos), "cosine_mean": float(np.mean(cos)),
            "cosine_min": float(np.min(cos))}


def latency(det: Detector, clips: list[tuple[Path, int]], trials: int = 6,
            block_s: float = 0.1) -> dict[str, float]:
    """Audio seconds from danger onset to the event start, over random onset offsets."""
    rng = np.random.default_rng(0)
    safe = [p for p, y in clips if y == 0]
    danger = [p for p, y in clips if y == 1 and det.predict(p).label == "danger"]
    block = int(block_s * det.sample_rate)
    lags, compute, start_errors = [], [], []
    for t in range(trials):
        lead = 5.0 + float(rng.uniform(0, 1))  # onset not aligned with a chunk boundary
        pre = np.concatenate([read(safe[t % len(safe)]), read(safe[(t + 1) % len(safe)])])
        pre = pre[: int(lead * det.sample_rate)]
        audio = np.concatenate([pre, read(danger[t % len(danger)]), read(safe[t % len(safe)])])
        stream = det.stream()
        tracker = EventTracker(EventConfig(threshold=det.threshold), det.stride_s,
                               chunk_s=det.hop_s)
        for i in range(0, audio.size, block):
            t0 = time.perf_counter()
            fired = [tr for sc in stream.push(audio[i : i + block])
                     for tr in tracker.update(sc.start_s, sc.end_s, sc.decision,
                                              chunk_probs=sc.chunk_probabilities)
                     if tr.kind == "start"]
            if fired:
                compute.append(time.perf_counter() - t0)
                lags.append((i + block) / det.sample_rate - lead)
                start_errors.append(fired[0].event.start_s - lead)
                break
    return {"trials": len(lags), "onset_to_event_audio_s_mean": float(np.mean(lags)),
            "onset_to_event_audio_s_max": float(np.max(lags)),
            "compute_at_event_block_s": float(np.mean(compute)),
            "onset_to_event_s_mean": float(np.mean(lags) + np.mean(compute)),
            "event_start_minus_onset_s": [round(e, 2) for e in start_errors]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("models_onnx"))
    ap.add_argument("--esc", type=Path, default=Path("../shared/esc10"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/runtime_cost"))
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = esc_clips(args.esc)
    model = with_classifier(args.model, clips, args.out)
    audio = np.concatenate([read(p) for p, _ in clips[: int(args.seconds // 5)]])
    result: dict[str, object] = {"model": str(args.model), "audio_s": audio.size / 32000,
                                 "cpu_count": os.cpu_count()}
    for threads in (1, None):
        det = Detector(model, provider="cpu", threads=threads)
        stream_cost(det, audio[: 5 * 32000])  # warm-up
        key = f"threads_{threads or 'default'}"
        result[key] = {"stream_s_per_audio_s": stream_cost(det, audio),
                       "naive_s_per_audio_s": naive_cost(det, audio)}
        print(key, json.dumps(result[key]), flush=True)
    result["agreement"] = agreement(det, clips)
    result["latency"] = latency(det, clips)
    result["chunks"] = to_chunks(audio, det.sessions.chunk_samples).shape[0]
    text = json.dumps(result, indent=2)
    (args.out / "runtime_cost.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
