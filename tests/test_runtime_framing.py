"""ChunkBuffer: arbitrary blocks in, exact chunks out, in order, with a padded flush."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.framing import ChunkBuffer


@pytest.mark.parametrize("sizes", [[1] * 37, [7, 3, 100, 0, 1, 55], [250], [9, 9, 9, 9, 9, 9]])
def test_chunks_reassemble_the_stream_in_order(sizes: list[int]) -> None:
    buf = ChunkBuffer(10, capacity=12)
    signal = np.arange(sum(sizes), dtype=np.float32)
    chunks, pos = [], 0
    for n in sizes:
        chunks += buf.push(signal[pos : pos + n])
        pos += n
    assert all(c.shape == (10,) for c in chunks)
    assert len(chunks) == len(signal) // 10
    joined = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    np.testing.assert_array_equal(joined, signal[: joined.size])
    assert buf.pending == len(signal) % 10
    tail, valid = buf.flush()
    if valid:
        np.testing.assert_array_equal(tail[:valid], signal[joined.size :])
        assert not tail[valid:].any()
    else:
        assert tail is None
    assert buf.pending == 0 and buf.total == len(signal)


def test_wraparound_keeps_order_over_many_pushes() -> None:
    buf = ChunkBuffer(4, capacity=8)
    out = []
    for start in range(0, 1000, 3):
        out += buf.push(np.arange(start, start + 3, dtype=np.float32))
    np.testing.assert_array_equal(np.concatenate(out), np.arange(len(out) * 4, dtype=np.float32))


def test_rejects_nonpositive_chunk() -> None:
    with pytest.raises(ValueError):
        ChunkBuffer(0)
