"""Ring buffer: blocks of any length in, fixed ``chunk_samples`` chunks out."""

from __future__ import annotations

import numpy as np


class ChunkBuffer:
    """Accumulates float32 mono samples and hands out whole chunks in arrival order.

    The storage is a fixed ring of ``capacity`` samples that grows only when one pushed block
    is larger than what it can hold, so a steady stream allocates nothing per block besides the
    returned chunks.
    """

    def __init__(self, chunk_samples: int, capacity: int | None = None) -> None:
        if chunk_samples <= 0:
            raise ValueError(f"chunk_samples must be positive, got {chunk_samples}")
        self.chunk_samples = int(chunk_samples)
        self._ring = np.zeros(max(int(capacity or 0), 2 * self.chunk_samples), np.float32)
        self._start = 0  # index of the oldest buffered sample
        self._size = 0  # buffered samples
        self.total = 0  # samples ever pushed

    @property
    def pending(self) -> int:
        """Samples buffered that do not yet fill a chunk."""
        return self._size

    def _grow(self, needed: int) -> None:
        data = self._read(self._size)
        ring = np.zeros(max(needed, 2 * len(self._ring)), np.float32)
        ring[: data.size] = data
        self._ring, self._start = ring, 0

    def _read(self, count: int) -> np.ndarray:
        idx = (self._start + np.arange(count)) % len(self._ring)
        return self._ring[idx]

    def push(self, block: np.ndarray) -> list[np.ndarray]:
        """Append ``block`` and return every chunk it completes (possibly none)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if self._size + block.size > len(self._ring):
            self._grow(self._size + block.size)
        end = (self._start + self._size) % len(self._ring)
        first = min(block.size, len(self._ring) - end)
        self._ring[end : end + first] = block[:first]
        self._ring[: block.size - first] = block[first:]
        self._size += block.size
        self.total += block.size
        chunks = []
        while self._size >= self.chunk_samples:
            chunks.append(self._read(self.chunk_samples))
            self._start = (self._start + self.chunk_samples) % len(self._ring)
            self._size -= self.chunk_samples
        return chunks

    def flush(self) -> tuple[np.ndarray | None, int]:
        """The partial last chunk zero-padded to ``chunk_samples`` (None if empty), and how many
        of its samples are real. The buffer is empty afterwards."""
        valid = self._size
        if valid == 0:
            return None, 0
        chunk = np.zeros(self.chunk_samples, np.float32)
        chunk[:valid] = self._read(valid)
        self._start, self._size = 0, 0
        return chunk, valid
