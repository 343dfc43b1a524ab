"""Device-identical features: waveform → hop-sized chunks → frame features → pooled windows.

Training computes its embeddings with these very functions and the very ONNX files the device
runs, so the classifier sees exactly the features it will be served.

The backbone runs once per chunk (``streaming.chunk_samples``, the daemon's hop). A window is
the last ``streaming.window_chunks`` chunks; its frame features are concatenated along time and
pooled into one embedding. Each audio sample thus passes through the backbone once, whatever
the window length.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.sessions import ModelSessions, run1


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


def chunk_frames(sessions: ModelSessions, chunks: np.ndarray, batch: int = 16) -> np.ndarray:
    """Backbone on ``[n, chunk_samples]`` → frame features ``[n, frames_per_chunk, D]``."""
    parts = [run1(sessions.backbone, chunks[i : i + batch]) for i in range(0, len(chunks), batch)]
    return np.concatenate(parts, axis=0)


def pool_window(sessions: ModelSessions, frames: np.ndarray) -> np.ndarray:
    """Pool ``[chunks, frames_per_chunk, D]`` (one window) into a ``[E]`` embedding."""
    stacked = frames.reshape(1, -1, frames.shape[-1])
    return run1(sessions.pooling, stacked)[0]


def embed_window(sessions: ModelSessions, frames: np.ndarray | None,
                 audio: np.ndarray) -> np.ndarray:
    """One window's ``[E]`` embedding: its chunks' frames pooled (``chunked``), or one backbone
    pass over its audio (``whole``), as the manifest's ``streaming.window_embedding`` says."""
    if sessions.window_embedding == "whole":
        return embed_offline(sessions, audio)
    return pool_window(sessions, frames)


def embed_audio(sessions: ModelSessions, audio: np.ndarray,
                hop_chunks: int = 1) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Embeddings ``[windows, E]`` of 32 kHz mono audio exactly as the daemon computes them.

    Returns the embeddings and each window's ``[start, end)`` chunk span.
    """
    chunks = to_chunks(audio, sessions.chunk_samples)
    whole = sessions.window_embedding == "whole"
    frames = None if whole else chunk_frames(sessions, chunks)
    spans = window_spans(len(chunks), sessions.window_chunks, hop_chunks)
    embeddings = np.stack([embed_window(sessions, None if whole else frames[s:e],
                                        chunks[s:e].reshape(-1)) for s, e in spans])
    return embeddings, spans


def embed_offline(sessions: ModelSessions, audio: np.ndarray) -> np.ndarray:
    """Whole-clip embedding ``[E]``: the backbone sees all the audio at once (reference path)."""
    frames = run1(sessions.backbone, np.asarray(audio, np.float32).reshape(1, -1))
    return run1(sessions.pooling, frames)[0]
