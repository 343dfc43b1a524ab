"""Sliding window over cached per-chunk features.

``chunked`` windows: the backbone runs once per chunk (``features.chunk_frames``); a window's
embedding pools the cached frame features of its last ``window_chunks`` chunks
(``features.pool_window``). ``whole`` windows: each chunk's backbone input (its log-mel, when
the model dir has a front end) is computed once and cached; a window runs the backbone once over
its chunks' inputs joined (``features.window_frames``), and each chunk's share of those frames
is pooled alone to place events in time (with a loudness gain, the joined log-mels are first
raised as its chunks' frame powers ask). These are the very functions training uses, so
streamed embeddings equal ``features.embed_audio``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_runtime.classes import mean_square
from edge_runtime.features import (
    backbone_inputs,
    chunk_frames,
    chunk_powers,
    embed_window,
    pool_window,
    window_frames,
)
from edge_runtime.sessions import ModelSessions


@dataclass
class Window:
    """One pooled window: chunk span ``[first, last]`` (inclusive), its embedding, each of its
    chunks pooled alone (``[chunks, E]``, oldest first) for locating events in time, its
    audio (for describing an event with AudioSet tags) and each chunk's mean square (its
    level, for the level gate; computed once per chunk)."""

    first_chunk: int
    last_chunk: int
    embedding: np.ndarray
    chunk_embeddings: np.ndarray
    audio_chunks: tuple[np.ndarray, ...]
    chunk_powers: tuple[float, ...]


class FrameWindow:
    """Feed chunks one at a time; get a window embedding each time a full window exists.

    Mirrors ``features.window_spans`` with a hop of ``stride`` chunks (the manifest's
    ``window_stride``): full windows only, except that a stream shorter than one window yields a
    single short window, and chunks that arrived after the last window get one more full window
    when the stream is finished. Chunks between windows only run the front end (``whole``) or
    the backbone (``chunked``).
    """

    def __init__(self, sessions: ModelSessions, window_chunks: int | None = None,
                 stride: int | None = None) -> None:
        self.sessions = sessions
        self.window_chunks = int(window_chunks or sessions.window_chunks)
        self.stride = int(stride or sessions.window_stride)
        self._last_pooled = -1  # chunk index that ended the last window
        self.whole = sessions.window_embedding == "whole"
        self._features: deque[np.ndarray] = deque(maxlen=self.window_chunks)  # frames or inputs
        self._chunk_embeddings: deque[np.ndarray] = deque(maxlen=self.window_chunks)
        self._audio: deque[np.ndarray] = deque(maxlen=self.window_chunks)
        self._powers: deque[float] = deque(maxlen=self.window_chunks)
        self._frame_powers: deque[np.ndarray | None] = deque(maxlen=self.window_chunks)
        self.chunks_seen = 0

    def add(self, chunk: np.ndarray) -> Window | None:
        """Take one chunk (its front end, or backbone for chunked windows); return the window
        ending with it, if full."""
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        self._audio.append(chunk)
        self._powers.append(mean_square(chunk))
        if self.whole:
            self._features.append(backbone_inputs(self.sessions, chunk[None])[0])
            self._frame_powers.append(chunk_powers(self.sessions, chunk))
        else:
            frames = chunk_frames(self.sessions, chunk[None])[0]
            self._features.append(frames)
            self._chunk_embeddings.append(pool_window(self.sessions, frames[None]))
        self.chunks_seen += 1
        if (len(self._features) < self.window_chunks
                or (self.chunks_seen - self.window_chunks) % self.stride):
            return None
        return self._pool()

    def finish(self) -> Window | None:
        """At end of stream: the single short window if no full window was ever produced, or
        the last full window if chunks arrived after the last one."""
        if not self._features or self._last_pooled == self.chunks_seen - 1:
            return None
        return self._pool()

    def _pool(self) -> Window:
        if self.whole:
            frames = window_frames(self.sessions, list(self._features),
                                   list(self._frame_powers))
            embedding = pool_window(self.sessions, frames[None])
            shares = np.array_split(frames, len(self._features))  # each chunk's share in time
            chunk_embeddings = np.stack([pool_window(self.sessions, s[None]) if len(s)
                                         else embedding for s in shares])
        else:
            embedding = embed_window(self.sessions, np.stack(list(self._features)), None)
            chunk_embeddings = np.stack(list(self._chunk_embeddings))
        last = self._last_pooled = self.chunks_seen - 1
        return Window(last - len(self._features) + 1, last, embedding, chunk_embeddings,
                      tuple(self._audio), tuple(self._powers))
