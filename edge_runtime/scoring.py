"""Embedding → p(danger) (and, for class models, per-class scores) with the classifier
session; embedding → top AudioSet tags (head)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from edge_runtime.classes import HEAD_PROBS_INPUT, normalise
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


@dataclass
class Scores:
    """Scores of a batch of embeddings: p(danger) ``[n]``; for class models the raw per-class
    scores ``[n, K]``, the same normalised by their thresholds, and each row's deciding class."""

    danger: np.ndarray
    classes: np.ndarray | None = None
    best: np.ndarray | None = None
    normalised: np.ndarray | None = None


class Scorer:
    """p(danger) per embedding and top tags.

    Binary models: column ``classifier.danger_column`` of the classifier's
    ``classifier.output`` (both from the manifest). Class models (manifest ``classes``): the
    largest class score normalised by its class threshold
    (:func:`edge_runtime.classes.normalise`), so the decision threshold is 0.5.
    """

    def __init__(self, sessions: ModelSessions) -> None:
        spec = sessions.manifest.classifier
        if sessions.classifier is None:
            raise ScoringError(f"{sessions.model_dir}: the model dir has no classifier; train "
                               "one with 'edge-train' before running the detector")
        self.sessions = sessions
        self.danger_column = 1 if spec is None else spec.danger_column
        inputs = [i.name for i in sessions.classifier.get_inputs()]
        embedding = [name for name in inputs if name != HEAD_PROBS_INPUT]
        if not embedding:
            raise ScoringError(f"{sessions.model_dir}: classifier has no embedding input, only "
                               f"{inputs}")
        if len(embedding) > 1:
            raise ScoringError(f"{sessions.model_dir}: classifier inputs {inputs}; expected an "
                               f"embedding, and at most '{HEAD_PROBS_INPUT}' beside it")
        self._input = embedding[0]
        self._reads_head = len(inputs) == 2
        if self._reads_head:
            self._check_head(sessions)
        self.classes = sessions.manifest.classes  # validated with the manifest
        if self.classes is not None:
            names = {o.name for o in sessions.classifier.get_outputs()}
            if self.classes.output not in names:
                raise ScoringError(f"{sessions.model_dir}: classifier has no output "
                                   f"'{self.classes.output}' named by the manifest")
            self._output = self.classes.output
            self._thresholds = np.asarray(self.classes.thresholds)
        else:
            self._output = probability_output(sessions.classifier,
                                              None if spec is None else spec.output)
            shape = next(o.shape for o in sessions.classifier.get_outputs()
                         if o.name == self._output)
            if len(shape) != 2 or (isinstance(shape[1], int)
                                   and shape[1] <= self.danger_column):
                raise ScoringError(f"{sessions.model_dir}: classifier output {self._output} "
                                   f"has shape {shape}; the manifest's danger_column "
                                   f"{self.danger_column} needs [batch, > {self.danger_column}]")

    @staticmethod
    def _check_head(sessions: ModelSessions) -> None:
        """The classifier reads the head's output: there is a head, as wide as it expects."""
        if sessions.head is None:
            raise ScoringError(f"{sessions.model_dir}: classifier reads '{HEAD_PROBS_INPUT}' "
                               "but the model dir has no head.onnx")
        wanted = next(i.shape for i in sessions.classifier.get_inputs()
                      if i.name == HEAD_PROBS_INPUT)
        given = sessions.head.get_outputs()[0].shape
        if (len(wanted) == 2 and len(given) == 2 and isinstance(wanted[1], int)
                and isinstance(given[1], int) and wanted[1] != given[1]):
            raise ScoringError(f"{sessions.model_dir}: classifier reads {wanted[1]} head "
                               f"probabilities but head.onnx gives {given[1]}")

    @property
    def has_tags(self) -> bool:
        return self.sessions.head is not None and bool(self.sessions.labels)

    @property
    def class_names(self) -> tuple[str, ...]:
        return () if self.classes is None else self.classes.names

    def set_class_thresholds(self, thresholds: list[float]) -> None:
        """Use other per-class thresholds (calibration replays); same scale as the manifest."""
        if self.classes is None:
            raise ScoringError("this model has no classes")
        self.classes = self.classes.with_thresholds(thresholds)
        self._thresholds = np.asarray(self.classes.thresholds)

    def normalised(self, raw: np.ndarray) -> np.ndarray:
        """Raw class scores ``[n, K]`` → normalised (each class threshold at 0.5)."""
        return normalise(raw, self._thresholds)

    def score(self, embeddings: np.ndarray) -> Scores:
        """``[n, E]`` (or ``[E]``) embeddings → :class:`Scores`."""
        batch = np.ascontiguousarray(np.atleast_2d(embeddings), dtype=np.float32)
        feed = {self._input: batch}
        if self._reads_head:
            feed[HEAD_PROBS_INPUT] = run1(self.sessions.head, batch)
        out = self.sessions.classifier.run([self._output], feed)[0]
        out = np.asarray(out, dtype=np.float32)
        if self.classes is not None:
            k = len(self.classes.names)
            if out.ndim != 2 or out.shape[1] != k:
                raise ScoringError(f"classifier output {self._output} has shape {out.shape}; "
                                   f"expected [batch, {k}]")
            norm = self.normalised(out)
            best = norm.argmax(axis=1)
            return Scores(norm[np.arange(len(norm)), best].astype(np.float32), out, best, norm)
        if out.ndim != 2 or out.shape[1] <= self.danger_column:
            raise ScoringError(f"classifier output {self._output} has shape {out.shape}; "
                               f"expected [batch, > {self.danger_column}]")
        return Scores(out[:, self.danger_column])

    def danger(self, embeddings: np.ndarray) -> np.ndarray:
        """``[n, E]`` (or ``[E]``) embeddings → ``[n]`` probabilities of danger."""
        return self.score(embeddings).danger

    def tags(self, embedding: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """Top ``top`` AudioSet (name, probability) of one embedding; [] without a head."""
        if not self.has_tags:
            return []
        probs = run1(self.sessions.head, np.atleast_2d(embedding))[0]
        order = np.argsort(probs)[::-1][:top]
        labels = self.sessions.labels
        return [(labels[i] if i < len(labels) else f"class_{i}", float(probs[i])) for i in order]
