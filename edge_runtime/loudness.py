"""Window loudness: how loud a window's sound is, and the gain that brings a quiet one up.

A window's level is the mean power of its loudest ``ACTIVE_SHARE`` of ``ACTIVE_FRAME_SECONDS``
frames (a short bark in 5 s of quiet room is measured by the bark, not by the room). Model dirs
whose manifest sets ``streaming.gain_max_db`` (mn04 class models) hear each window as if it
were raised to ``streaming.gain_target_dbfs`` — never lowered, never raised by more than
``gain_max_db`` — applied to its log-mel by ``gain.onnx`` in training and on the device alike
(:func:`edge_runtime.features.window_frames`). Distant and quiet recordings then reach the
model at the loudness its training sounds had.
"""

from __future__ import annotations

import math

import numpy as np

ACTIVE_FRAME_SECONDS = 0.05
ACTIVE_SHARE = 0.2
GAIN_INPUTS = ("log_mel", "gain_db")  # gain.onnx: [batch, mels, time] log-mel, [batch] dB


def active_power(signal: np.ndarray, sample_rate: int) -> float:
    """Mean power of the loudest ``ACTIVE_SHARE`` of ``ACTIVE_FRAME_SECONDS`` frames (of the
    whole signal when it is shorter than one frame)."""
    x = np.asarray(signal, np.float64).reshape(-1)
    n = max(1, int(ACTIVE_FRAME_SECONDS * sample_rate))
    frames = x.size // n
    if frames < 1:
        return float(np.mean(x * x)) if x.size else 0.0
    power = np.mean(x[:frames * n].reshape(frames, n) ** 2, axis=1)
    top = max(1, int(math.ceil(ACTIVE_SHARE * frames)))
    return float(np.mean(np.sort(power)[-top:]))


def raise_db(signal: np.ndarray, sample_rate: int, target_dbfs: float, max_db: float) -> float:
    """Gain in dB (0 … ``max_db``) that brings the signal's active level up to
    ``target_dbfs``; digital silence gets ``max_db`` (nothing to hear either way)."""
    power = active_power(signal, sample_rate)
    if power <= 0.0:
        return float(max_db)
    return float(min(max(target_dbfs - 10.0 * math.log10(power), 0.0), max_db))
