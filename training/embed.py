"""Clip embeddings computed exactly as the device computes them, cached per model.

Embeddings come from ``edge_runtime.features.embed_audio`` running the model dir's own
``backbone.onnx`` and ``pooling.onnx`` — the very files and the very chunking the daemon uses —
so the classifier is trained on the features it will be served.

How a clip maps onto device windows: the daemon runs the backbone once per 1 s chunk and pools
the frame features of the last 5 chunks (a 5 s window). An ESC-50 clip is exactly 5 s, so it is
exactly one device window: one embedding per clip, no cropping, no padding. A longer clip gives
one row per full window (hop 1 chunk), all with the clip's label and fold; a shorter one is
zero-padded to whole chunks, as the device does at the end of a file.

Effect measured: the device path (chunked) differs from a whole-clip pass only at chunk edges
(convolutions see zeros across each 1 s boundary instead of neighbouring audio). Per clip we
record the cosine between ``embed_audio`` (device, chunked) and ``embed_offline`` (one pass);
``build`` summarises it in the report. Training uses the device path: on ESC-10 danger/safe
with a random-init Cnn14 (no quality claim) the mean cosine was 0.945 (min 0.915), and a
LogReg trained on whole-clip embeddings but served device embeddings fell from 0.963 to 0.896
fold-CV accuracy — the train/serve mismatch of the old prototype, measured.

Cache: one float32 ``.npz`` per embedding model (id = sha256 over the backbone and
pooling files plus the streaming settings) holding filename, fold, label, category, window
index, the cosine and the model id. A changed model gives a new id: the old cache is ignored.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime import atomic
from edge_runtime.audio import AudioError
from edge_runtime.features import embed_audio, embed_offline
from edge_runtime.sessions import ModelSessions, load_sessions
from training.dataset import Clip, load_audio
from training.logs import progress

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Rows of embeddings with their clip metadata (one row per device window)."""

    x: np.ndarray  # [rows, E] float32
    filename: np.ndarray  # [rows] str
    fold: np.ndarray  # [rows] int
    label: np.ndarray  # [rows] int, 1 = danger
    category: np.ndarray  # [rows] str
    window: np.ndarray  # [rows] int, window index within the clip
    cosine: np.ndarray  # [rows] float, streamed vs offline (NaN if not measured / multi-window)
    model_id: str

    def __len__(self) -> int:
        return len(self.x)


EMBEDDING_ROLES = ("frontend", "backbone", "pooling")  # the graphs an embedding passes (+ gain)


def embedding_model_id(sessions: ModelSessions) -> str:
    """Id of what shapes an embedding: front end + backbone + pooling sha256 (with their
    external weights; + the gain graph when windows are raised) and the streaming settings."""
    files = sessions.manifest.files
    spec = sessions.manifest.streaming
    shaping = EMBEDDING_ROLES + (("gain",) if spec.gain_on else ())
    roles = sorted(r for r in files if r.removesuffix("_data") in shaping)
    pairs = hashlib.sha256("".join(f"{role}={files[role].sha256}\n"
                                   for role in roles).encode()).hexdigest()
    mode = "" if sessions.window_embedding == "chunked" else f"/{sessions.window_embedding}"
    gain = f"/gain{spec.gain_target_dbfs:g}+{spec.gain_max_db:g}" if spec.gain_on else ""
    streaming = (f"{sessions.chunk_samples}/{sessions.window_chunks}/{sessions.sample_rate}"
                 f"{mode}{gain}")
    return hashlib.sha256(f"{pairs}:{streaming}".encode()).hexdigest()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def embed_clip(sessions: ModelSessions, audio: np.ndarray, measure_offline: bool
               ) -> tuple[np.ndarray, float]:
    """Device-path window embeddings of one clip and its streamed-vs-offline cosine."""
    rows, _ = embed_audio(sessions, audio)
    cos = float("nan")
    if measure_offline and len(rows) == 1:
        cos = cosine(rows[0], embed_offline(sessions, audio))
    return rows.astype(np.float32), cos


def cache_path(cache_dir: Path, model_id: str) -> Path:
    return cache_dir / f"embeddings-{model_id[:16]}.npz"


Cached = dict[str, dict[str, object]]  # filename → {x: rows, cosine, fold, label, category}


def load_cache(path: Path, model_id: str) -> Cached:
    """Cached clips of ``path`` if it was made by ``model_id`` (else nothing)."""
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["model_id"]) != model_id:
                log.info("%s: made with another model; ignored", path)
                return {}
            arrays = {key: data[key] for key in ("x", "filename", "fold", "label", "category",
                                                  "cosine")}
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s: unreadable embedding cache (%s); recomputing", path, exc)
        return {}
    out: Cached = {}
    names = arrays["filename"]
    for name in dict.fromkeys(names.tolist()):
        idx = np.flatnonzero(names == name)
        out[name] = {"x": arrays["x"][idx], "cosine": float(arrays["cosine"][idx[0]]),
                     "fold": int(arrays["fold"][idx[0]]), "label": int(arrays["label"][idx[0]]),
                     "category": str(arrays["category"][idx[0]])}
    return out


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez`` through a temporary file and rename (umask honoured)."""

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic.write_with(path, save)


def to_rows(entries: list[tuple[str, dict[str, object]]], model_id: str) -> Embeddings:
    """Flatten (filename, entry) pairs into one row per window."""
    xs, names, folds, labels, cats, wins, coss = [], [], [], [], [], [], []
    for name, entry in entries:
        for w, row in enumerate(entry["x"]):
            xs.append(row)
            names.append(name)
            folds.append(entry["fold"])
            labels.append(entry["label"])
            cats.append(entry["category"])
            wins.append(w)
            coss.append(entry["cosine"])
    if not xs:
        raise ValueError("no clip could be embedded (all audio files missing or unreadable)")
    return Embeddings(np.stack(xs).astype(np.float32), np.array(names), np.array(folds),
                      np.array(labels), np.array(cats), np.array(wins),
                      np.array(coss, dtype=np.float64), model_id)


def embed_clips(model_dir: str | Path, clips: list[Clip], cache_dir: Path | None = None,
                threads: int | None = None, measure_offline: bool = True) -> Embeddings:
    """Embed ``clips`` with the model dir's ONNX files, reusing and updating the cache.

    A missing or unreadable audio file is skipped with a one-line warning naming it; the
    returned rows follow ``clips`` order with labels from ``clips`` (the current mapping).
    """
    sessions = load_sessions(model_dir, provider="cpu", threads=threads, with_classifier=False)
    model_id = embedding_model_id(sessions)
    path = cache_path(Path(cache_dir), model_id) if cache_dir is not None else None
    found = load_cache(path, model_id) if path is not None else {}
    todo = [clip for clip in clips if clip.filename not in found]
    log.info("embeddings: %d cached, %d to compute (embedding cache %s)", len(clips) - len(todo),
             len(todo), model_id[:12])
    skipped = 0
    for clip in progress(todo, "embedding", "clip"):
        try:
            audio = load_audio(clip.path, sessions.sample_rate)
        except AudioError as exc:
            log.warning("%s; skipped", exc)
            skipped += 1
            continue
        rows, cos = embed_clip(sessions, audio, measure_offline)
        found[clip.filename] = {"x": rows, "cosine": cos}
    if skipped:
        log.warning("%d of %d clips skipped (unreadable audio)", skipped, len(clips))
    for clip in clips:  # labels always from the current mapping
        if clip.filename in found:
            found[clip.filename].update(fold=clip.fold, label=clip.label,
                                        category=clip.category)
    current = [(c.filename, found[c.filename]) for c in clips if c.filename in found]
    result = to_rows(current, model_id)
    if path is not None and found:
        everything = to_rows(list(found.items()), model_id)
        save_npz_atomic(path, model_id=np.array(model_id), x=everything.x,
                        filename=everything.filename, fold=everything.fold,
                        label=everything.label, category=everything.category,
                        window=everything.window, cosine=everything.cosine)
        remove_stale_caches(path)
    return result


def remove_stale_caches(current: Path) -> list[Path]:
    """Delete the other ``embeddings-*.npz`` beside ``current``: made by models this dir no
    longer holds (a model dir holds one embedding model), they would only pile up."""
    stale = [p for p in current.parent.glob("embeddings-*.npz") if p != current]
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed stale embedding cache %s", path.name)
    return stale


def cosine_summary(emb: Embeddings) -> dict[str, float | int]:
    """Streamed (device) vs offline (whole clip) cosine over the measured clips."""
    per_clip = {}
    for name, cos in zip(emb.filename.tolist(), emb.cosine.tolist(), strict=True):
        per_clip.setdefault(name, cos)
    values = np.array([v for v in per_clip.values() if np.isfinite(v)])
    if values.size == 0:
        return {"clips": 0}
    return {"clips": int(values.size), "mean": float(values.mean()),
            "median": float(np.median(values)), "min": float(values.min()),
            "p05": float(np.percentile(values, 5)), "max": float(values.max())}
