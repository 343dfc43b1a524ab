"""Named danger classes: the manifest's ``classes`` section and how class scores decide.

A model with classes has a classifier whose output ``classes.output`` holds one raw score per
class (``[batch, K]``; trained probabilities and/or zero-shot AudioSet evidence). Each class has
its own threshold (``classes.thresholds``, set by ``edge-train build`` and ``edge-train
calibrate``). To drive one event state machine with one threshold, every raw score is mapped
piecewise-linearly so that its class threshold lands on 0.5::

    n(s, t) = 0.5 * s / t                      for s <  t
    n(s, t) = 0.5 + 0.5 * (s - t) / (1 - t)    for s >= t

p(danger) of a window is the largest normalised score and its class the one that gave it, so
``p(danger) >= 0.5`` exactly when some class reaches its own threshold. Windows quieter than
``classes.level_gate_dbfs`` (RMS) are never danger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DECISION_THRESHOLD = 0.5  # where every class threshold lands after normalisation
EVIDENCE = ("trained", "audioset")


class ClassSpecError(ValueError):
    """The manifest's ``classes`` section is malformed (one-line message)."""


@dataclass(frozen=True)
class ClassSpec:
    """The ``classes`` section of a manifest, validated."""

    names: tuple[str, ...]
    thresholds: tuple[float, ...]
    output: str = "class_scores"
    evidence: tuple[str, ...] = EVIDENCE
    level_gate_dbfs: float = -120.0

    @classmethod
    def parse(cls, section: Any, where: str = "manifest.json") -> ClassSpec:
        """Validate a raw ``classes`` dict; ``ClassSpecError`` names the field that is wrong."""
        if not isinstance(section, dict):
            raise ClassSpecError(f"{where}: 'classes' must be an object")
        names = section.get("names")
        if (not isinstance(names, list) or not names or len(names) > 256
                or not all(isinstance(n, str) and n.replace("_", "").isalnum() for n in names)
                or len(set(names)) != len(names)):
            raise ClassSpecError(f"{where}: classes.names must be 1-256 unique [a-z0-9_] names")
        thresholds = section.get("thresholds")
        if (not isinstance(thresholds, list) or len(thresholds) != len(names)
                or not all(isinstance(t, int | float) and not isinstance(t, bool)
                           and math.isfinite(t) and 0.0 < t < 1.0 for t in thresholds)):
            raise ClassSpecError(f"{where}: classes.thresholds must be {len(names)} numbers "
                                 "in (0, 1)")
        output = section.get("output", "class_scores")
        if not isinstance(output, str) or not output:
            raise ClassSpecError(f"{where}: classes.output must be a tensor name")
        evidence = section.get("evidence", list(EVIDENCE))
        if (not isinstance(evidence, list) or not evidence
                or not set(evidence) <= set(EVIDENCE)):
            raise ClassSpecError(f"{where}: classes.evidence must be a non-empty subset of "
                                 f"{list(EVIDENCE)}")
        gate = section.get("level_gate_dbfs", -120.0)
        if (not isinstance(gate, int | float) or isinstance(gate, bool)
                or not -120.0 <= gate <= 0.0):
            raise ClassSpecError(f"{where}: classes.level_gate_dbfs must be in [-120, 0]")
        return cls(tuple(names), tuple(float(t) for t in thresholds), output,
                   tuple(evidence), float(gate))

    def with_thresholds(self, thresholds: list[float]) -> ClassSpec:
        return ClassSpec(self.names, tuple(float(t) for t in thresholds), self.output,
                         self.evidence, self.level_gate_dbfs)

    def as_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "output": self.output,
                "thresholds": [round(t, 6) for t in self.thresholds],
                "evidence": list(self.evidence), "level_gate_dbfs": self.level_gate_dbfs}


def normalise(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Map raw class scores ``[n, K]`` so that each class's threshold becomes 0.5."""
    s = np.clip(np.asarray(scores, np.float64), 0.0, 1.0)
    t = np.asarray(thresholds, np.float64)
    below = 0.5 * s / t
    above = 0.5 + 0.5 * (s - t) / (1.0 - t)
    return np.where(s < t, below, above)


def level_dbfs(audio: np.ndarray) -> float:
    """RMS level of float audio in dB relative to full scale (−inf … 0; silence → −200)."""
    x = np.asarray(audio, np.float64).reshape(-1)
    if x.size == 0:
        return -200.0
    rms = math.sqrt(float(np.mean(x * x)))
    return 20.0 * math.log10(rms) if rms > 1e-10 else -200.0
