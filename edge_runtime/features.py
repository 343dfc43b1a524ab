"""Device-identical features: waveform → hop-sized chunks → frame features → pooled windows.

Training computes its embeddings with these very functions and the very ONNX files the device
runs, so the classifier sees exactly the features it will be served.

The front end (``frontend.onnx`` when the model dir lists one: waveform → log-mel) runs once
per chunk (``streaming.chunk_samples``, the daemon's hop); the backbone reads its output, or the
waveform itself when there is no front end graph. A window is the last
``streaming.window_chunks`` chunks: ``chunked`` windows concatenate their chunks' frame
features along time and pool them (the backbone runs once per chunk); ``whole`` windows run the
backbone once over their chunks' backbone inputs joined along time (the last axis, for a
waveform and for a log-mel alike), so the front end still runs once per chunk; with a loudness
gain (``streaming.gain_max_db``) ``gain.onnx`` raises the joined log-mel of a quiet window first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.loudness import GAIN_INPUTS, frame_powers, raise_db
from edge_runtime.sessions import ModelSessions, run1

if TYPE_CHECKING:
    import onnxruntime as ort


def to_chunks(audio: np.ndarray, chunk_samples: int) -> np.ndarray:
    """Split mono audio into ``[n, chunk_samples]`` rows, zero-padding the last partial chunk."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = max(1, -(-audio.size // chunk_samples))
    padded = np.zeros(n * chunk_samples, dtype=np.float32)
    padded[: audio.size] = audio
    return padded.reshape(n, chunk_samples)


def window_spans(n_chunks: int, window_chunks: int, hop_chunks: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` chunk ranges of every full window; one short window if audio is shorter."""
    if n_chunks <= window_chunks:
        return [(0, n_chunks)]
    return [(s, s + window_chunks) for s in range(0, n_chunks - window_chunks + 1, hop_chunks)]


def batched(session: ort.InferenceSession, rows: np.ndarray, batch: int = 16) -> np.ndarray:
    """A one-input session over ``rows`` in batches of ``batch``, outputs concatenated."""
    return np.concatenate([run1(session, rows[i : i + batch])
                           for i in range(0, len(rows), batch)], axis=0)


def backbone_inputs(sessions: ModelSessions, chunks: np.ndarray) -> np.ndarray:
    """What the backbone reads for ``[n, samples]`` audio: the front end's output (log-mel
    ``[n, mels, T]``) when the model dir has a front end graph, else the audio itself."""
    chunks = np.asarray(chunks, np.float32)
    return chunks if sessions.frontend is None else batched(sessions.frontend, chunks)


def join_inputs(inputs: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Consecutive chunks' backbone inputs ``[n, ..., T]`` → one ``[1, ..., n*T]`` (time is the
    last axis of a waveform and of a log-mel alike)."""
    return np.concatenate(list(inputs), axis=-1)[None]


def chunk_frames(sessions: ModelSessions, chunks: np.ndarray, batch: int = 16) -> np.ndarray:
    """Backbone on ``[n, chunk_samples]`` → frame features ``[n, frames_per_chunk, D]``."""
    return batched(sessions.backbone, backbone_inputs(sessions, chunks), batch)


def window_frames(sessions: ModelSessions, inputs: np.ndarray | list[np.ndarray],
                  powers: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One backbone pass over a window's chunks' backbone inputs → frames ``[T', D]``. With a
    loudness gain (``sessions.gain``) the joined inputs are first raised as the window's
    chunks' frame ``powers`` (:func:`chunk_powers`) ask (:mod:`edge_runtime.loudness`)."""
    joined = join_inputs(inputs)
    if sessions.gain is not None:
        if powers is None:
            raise ValueError("a window with a loudness gain needs its chunks' frame powers")
        streaming = sessions.manifest.streaming
        db = raise_db(np.concatenate(powers), streaming.gain_target_dbfs, streaming.gain_max_db)
        log_mel, gain_db = GAIN_INPUTS
        joined = sessions.gain.run(None, {log_mel: joined,
                                          gain_db: np.array([db], np.float32)})[0]
    return run1(sessions.backbone, joined)[0]


def heard_audio(sessions: ModelSessions, audio: np.ndarray) -> np.ndarray:
    """A window's audio as the model hears it: scaled by its loudness gain where the model has
    one (what ``gain.onnx`` does to its log-mel), else unchanged."""
    if sessions.gain is None:
        return audio
    streaming = sessions.manifest.streaming
    db = raise_db(frame_powers(audio, sessions.sample_rate), streaming.gain_target_dbfs,
                  streaming.gain_max_db)
    return (np.asarray(audio, np.float32) * np.float32(10 ** (db / 20))).astype(np.float32)


def pool_window(sessions: ModelSessions, frames: np.ndarray) -> np.ndarray:
    """Pool ``[chunks, frames_per_chunk, D]`` (one window) into a ``[E]`` embedding."""
    stacked = frames.reshape(1, -1, frames.shape[-1])
    return run1(sessions.pooling, stacked)[0]


def chunk_powers(sessions: ModelSessions, chunk: np.ndarray) -> np.ndarray | None:
    """A chunk's frame powers for the loudness gain (None when the model has no gain)."""
    return None if sessions.gain is None else frame_powers(chunk, sessions.sample_rate)


def embed_window(sessions: ModelSessions, frames: np.ndarray | None,
                 inputs: np.ndarray | list[np.ndarray] | None,
                 powers: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One window's ``[E]`` embedding: its chunks' frames pooled (``chunked``), or one backbone
    pass over its chunks' backbone inputs (``whole``; ``powers``: its chunks' frame powers, for
    the loudness gain), as ``streaming.window_embedding`` says."""
    if sessions.window_embedding == "whole":
        return pool_window(sessions, window_frames(sessions, inputs, powers)[None])
    return pool_window(sessions, frames)


def embed_audio(sessions: ModelSessions, audio: np.ndarray,
                hop_chunks: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Embeddings ``[windows, E]`` of 32 kHz mono audio exactly as the daemon computes them.

    Returns the embeddings and each window's ``[start, end)`` chunk span.
    """
    chunks = to_chunks(audio, sessions.chunk_samples)
    whole = sessions.window_embedding == "whole"
    inputs = backbone_inputs(sessions, chunks) if whole else None
    frames = None if whole else chunk_frames(sessions, chunks)
    spans = window_spans(len(chunks), sessions.window_chunks, hop_chunks)
    powers = [chunk_powers(sessions, c) for c in chunks] if whole else None
    embeddings = np.stack([embed_window(sessions, None if whole else frames[s:e],
                                        inputs[s:e] if whole else None,
                                        powers[s:e] if whole else None)
                           for s, e in spans])
    return embeddings, spans


def embed_offline(sessions: ModelSessions, audio: np.ndarray) -> np.ndarray:
    """Whole-clip embedding ``[E]``: the backbone sees all the audio at once (reference path)."""
    inputs = backbone_inputs(sessions, np.asarray(audio, np.float32).reshape(1, -1))
    return run1(sessions.pooling, run1(sessions.backbone, inputs))[0]
