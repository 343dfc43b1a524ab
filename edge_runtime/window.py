"""Sliding window over cached per-chunk frame features.

The backbone runs once per chunk (``features.chunk_frames``); a window's embedding pools the
cached frame features of its last ``window_chunks`` chunks (``features.pool_window``). These are
the very functions training uses, so streamed embeddings equal ``features.embed_audio``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_runtime.features import chunk_frames, embed_window, pool_window
from edge_runtime.sessions import ModelSessions


@dataclass
class Window:
    """One pooled window: chunk span ``[first, last]`` (inclusive), its embedding, each of its
    chunks pooled alone (``[chunks, E]``, oldest first) for locating events in time, and its
    audio (for describing an event with AudioSet tags)."""

    first_chunk: int
    last_chunk: int
    embedding: np.ndarray
    chunk_embeddings: np.ndarray
    audio_chunks: tuple[np.ndarray, ...]


class FrameWindow:
    """Feed chunks one at a time; get a window embedding each time a full window exists.

    Mirrors ``features.window_spans`` with a hop of one chunk: full windows only, except that a
    stream shorter than one window yields a single short window when it is finished.
    """

    def __init__(self, sessions: ModelSessions, window_chunks: int | None = None) -> None:
        self.sessions = sessions
        self.window_chunks = int(window_chunks or sessions.window_chunks)
        self._frames: deque[np.ndarray] = deque(maxlen=self.window_chunks)
        self._chunk_embeddings: deque[np.ndarray] = deque(maxlen=self.window_chunks)
        self._audio: deque[np.ndarray] = deque(maxlen=self.window_chunks)
        self.chunks_seen = 0
        self.windows_emitted = 0

    def add(self, chunk: np.ndarray) -> Window | None:
        """Run the backbone on one chunk; return the window ending with it, if full."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        frames = chunk_frames(self.sessions, chunk[None])[0]
        self._audio.append(chunk)
        self._frames.append(frames)
        self._chunk_embeddings.append(pool_window(self.sessions, frames[None]))
        self.chunks_seen += 1
        if len(self._frames) < self.window_chunks:
            return None
        return self._pool()

    def finish(self) -> Window | None:
        """At end of stream: the single short window if no full window was ever produced."""
        if self.windows_emitted or not self._frames:
            return None
        return self._pool()

    def _pool(self) -> Window:
        audio = np.concatenate(self._audio) if self.sessions.window_embedding == "whole" else None
        embedding = embed_window(self.sessions, np.stack(list(self._frames)), audio)
        self.windows_emitted += 1
        last = self.chunks_seen - 1
        return Window(last - len(self._frames) + 1, last, embedding,
                      np.stack(list(self._chunk_embeddings)), tuple(self._audio))
