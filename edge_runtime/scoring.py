"""Embedding → p(danger) with the classifier session; embedding → top AudioSet tags (head)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edge_runtime.sessions import ModelSessions, run1


class ScoringError(RuntimeError):
    """The model dir cannot score danger (no classifier, or an unexpected output)."""


def probability_output(session: ort.InferenceSession, name: str | None = None) -> str:
    """Name of the classifier's probability tensor: ``name`` (the manifest's
    ``classifier.output``) when given, else the float output (format 1 manifests)."""
    outputs = [o for o in session.get_outputs() if o.type == "tensor(float)"]
    if name is not None:
        if name not in {o.name for o in outputs}:
            raise ScoringError(f"classifier.onnx has no float output {name!r} (the manifest's "
                               f"classifier.output); it has {[o.name for o in outputs]}")
        return name
    named = [o for o in outputs if "prob" in o.name.lower()]
    chosen = (named or outputs)[:1]
    if not chosen:
        raise ScoringError("classifier.onnx has no float probability output "
                           "(export it with zipmap disabled)")
    return chosen[0].name


class Scorer:
    """p(danger) per embedding (the manifest's ``classifier.danger_column`` of its
    ``classifier.output``) and top tags."""

    def __init__(self, sessions: ModelSessions) -> None:
        spec = sessions.manifest.classifier
        if sessions.classifier is None:
            raise ScoringError(f"{sessions.model_dir}: the model dir has no classifier; train "
                               "one with 'edge-train' before running the detector")
        self.sessions = sessions
        self.danger_column = 1 if spec is None else spec.danger_column
        self._input = sessions.classifier.get_inputs()[0].name
        self._output = probability_output(sessions.classifier,
                                          None if spec is None else spec.output)
        shape = next(o.shape for o in sessions.classifier.get_outputs()
                     if o.name == self._output)
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] <= self.danger_column):
            raise ScoringError(f"{sessions.model_dir}: classifier output {self._output} has "
                               f"shape {shape}; the manifest's danger_column "
                               f"{self.danger_column} needs [batch, > {self.danger_column}]")

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
                               f"expected [batch, > {self.danger_column}]")
        return probs[:, self.danger_column]

    def tags(self, embedding: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """Top ``top`` AudioSet (name, probability) of one embedding; [] without a head."""
        if not self.has_tags:
            return []
        probs = run1(self.sessions.head, np.atleast_2d(embedding))[0]
        order = np.argsort(probs)[::-1][:top]
        labels = self.sessions.labels
        return [(labels[i] if i < len(labels) else f"class_{i}", float(probs[i])) for i in order]
