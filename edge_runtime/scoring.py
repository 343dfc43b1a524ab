"""Embedding → p(danger) with the classifier session; embedding → top AudioSet tags (head)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edge_runtime.sessions import ModelSessions, run1


class ScoringError(RuntimeError):
    """The model dir cannot score danger (no classifier, or an unexpected output)."""


def probability_output(session: ort.InferenceSession) -> str:
    """Name of the classifier's probability tensor (skl2onnx also emits an int64 label)."""
    outputs = [o for o in session.get_outputs() if o.type == "tensor(float)"]
    named = [o for o in outputs if "prob" in o.name.lower()]
    chosen = (named or outputs)[:1]
    if not chosen:
        raise ScoringError("classifier.onnx has no float probability output "
                           "(export it with zipmap disabled)")
    return chosen[0].name


class Scorer:
    """p(danger) per embedding (column 1 of the classifier's probabilities) and top tags."""

    def __init__(self, sessions: ModelSessions, danger_column: int = 1) -> None:
        if sessions.classifier is None:
            raise ScoringError(f"{sessions.model_dir}: the model dir has no classifier; train "
                               "one with 'edge-train' before running the detector")
        self.sessions = sessions
        self.danger_column = danger_column
        self._input = sessions.classifier.get_inputs()[0].name
        self._output = probability_output(sessions.classifier)

    @property
    def has_tags(self) -> bool:
        return self.sessions.head is not None and bool(self.sessions.labels)

    def danger(self, embeddings: np.ndarray) -> np.ndarray:
        """``[n, E]`` (or ``[E]``) embeddings → ``[n]`` probabilities of danger."""
        batch = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        probs = self.sessions.classifier.run([self._output], {self._input: batch})[0]
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] <= self.danger_column:
            raise ScoringError(f"classifier output {self._output} has shape {probs.shape}; "
                               "expected [batch, 2]")
        return probs[:, self.danger_column]

    def tags(self, embedding: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """Top ``top`` AudioSet (name, probability) of one embedding; [] without a head."""
        if not self.has_tags:
            return []
        probs = run1(self.sessions.head, np.atleast_2d(embedding))[0]
        order = np.argsort(probs)[::-1][:top]
        labels = self.sessions.labels
        return [(labels[i] if i < len(labels) else f"class_{i}", float(probs[i])) for i in order]
