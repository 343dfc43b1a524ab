"""Window loudness: how loud a window's sound is, and the gain that brings a quiet one up.

A window's level is the mean power of its loudest ``ACTIVE_SHARE`` of ``ACTIVE_FRAME_SECONDS``
frames (a short bark in 5 s of quiet room is measured by the bark, not by the room); each chunk's
frame powers are computed once, when it arrives, and a window reads its chunks'. Model dirs
whose manifest sets ``streaming.gain_max_db`` (mn04 class models) hear each window as if it
were raised to ``streaming.gain_target_dbfs`` — never lowered, never raised by more than
``gain_max_db`` — applied to its log-mel by ``gain.onnx`` in training and on the device alike
(:func:`edge_runtime.features.window_frames`). Distant and quiet recordings then reach the
model at the loudness its training sounds had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ACTIVE_FRAME_SECONDS = 0.05
ACTIVE_SHARE = 0.2
GAIN_INPUTS = ("log_mel", "gain_db")  # gain.onnx: [batch, mels, time] log-mel, [batch] dB


def frame_powers(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean square of each whole ``ACTIVE_FRAME_SECONDS`` frame (float64); a signal shorter
    than one frame is one frame of its own length (none when empty)."""
    x = np.asarray(signal, np.float32).reshape(-1)
    n = max(1, int(ACTIVE_FRAME_SECONDS * sample_rate))
    frames = x.size // n
    if frames < 1:
        return np.array([float(np.dot(x, x)) / x.size] if x.size else [], np.float64)
    grid = x[:frames * n].reshape(frames, n)
    return np.einsum("ij,ij->i", grid, grid, dtype=np.float64) / n


def loudest_power(powers: np.ndarray | Sequence[float]) -> float:
    """Mean of the loudest ``ACTIVE_SHARE`` of frame powers (0 for none)."""
    p = np.asarray(powers, np.float64).reshape(-1)
    if not p.size:
        return 0.0
    top = max(1, int(math.ceil(ACTIVE_SHARE * p.size)))
    return float(np.mean(np.partition(p, p.size - top)[-top:]))


def active_power(signal: np.ndarray, sample_rate: int) -> float:
    """Mean power of the loudest ``ACTIVE_SHARE`` of ``ACTIVE_FRAME_SECONDS`` frames."""
    return loudest_power(frame_powers(signal, sample_rate))


def raise_db(powers: np.ndarray | Sequence[float], target_dbfs: float, max_db: float) -> float:
    """Gain in dB (0 … ``max_db``) that brings a window whose frame powers are ``powers`` up to
    ``target_dbfs``; digital silence gets ``max_db``."""
    power = loudest_power(powers)
    if power <= 0.0:
        return float(max_db)
    return float(min(max(target_dbfs - 10.0 * math.log10(power), 0.0), max_db))
