"""Named danger classes: how class scores decide (the manifest's ``classes`` section is
:class:`edge_runtime.manifest.ClassSpec`).

A model with classes has a classifier whose output ``classes.output`` holds one raw score per
class (``[batch, K]``; trained probabilities and/or zero-shot AudioSet evidence). Each class has
its own threshold (``classes.thresholds``, set by ``edge-train build`` and ``edge-train
calibrate``). To drive one event state machine with one threshold, every raw score is mapped
piecewise-linearly so that its class threshold lands on 0.5::

    n(s, t) = 0.5 * s / t                      for s <  t
    n(s, t) = 0.5 + 0.5 * (s - t) / (1 - t)    for s >= t

p(danger) of a window is the largest normalised score and its class the one that gave it, so
``p(danger) >= 0.5`` exactly when some class reaches its own threshold. Windows quieter than
``classes.level_gate_dbfs`` (RMS) are never danger. A class with ``classes.min_seconds`` is held
just below 0.5 until it has lasted that long (:mod:`edge_runtime.persistence`, per stream).
"""

from __future__ import annotations

import math

import numpy as np

from edge_runtime.manifest import EVIDENCE, ClassSpec, ManifestError

__all__ = ["DECISION_THRESHOLD", "EVIDENCE", "HEAD_PROBS_INPUT", "ClassSpec", "ClassSpecError",
           "normalise"]

DECISION_THRESHOLD = 0.5  # where every class threshold lands after normalisation
# A class model's classifier.onnx that reads the AudioSet head takes head.onnx's output as this
# second input (the runtime runs the head once per scored window), so the head's weights are
# loaded once, in head.onnx, instead of a second copy inside classifier.onnx.
HEAD_PROBS_INPUT = "audioset_probs"


ClassSpecError = ManifestError  # the classes section is validated with the manifest


def normalise(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Map raw class scores ``[n, K]`` so that each class's threshold becomes 0.5."""
    s = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    t = np.asarray(thresholds, np.float64)
    below = 0.5 * s / t
    above = 0.5 + 0.5 * (s - t) / (1.0 - t)
    return np.where(s < t, below, above)


def mean_square(audio: np.ndarray) -> float:
    """Mean of the squared samples (0 for no samples)."""
    x = np.asarray(audio, np.float64).reshape(-1)
    return float(np.mean(x * x)) if x.size else 0.0


def dbfs(power: float) -> float:
    """A mean square as dB relative to full scale (silence → −200)."""
    return 10.0 * math.log10(power) if power > 1e-20 else -200.0
