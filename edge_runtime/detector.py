"""The Python API: ``Detector(model_dir).predict(path_or_array)``; the daemon streams with it.

>>> det = Detector("models_onnx")                      # doctest: +SKIP
>>> det.predict("clip.wav")                            # doctest: +SKIP
Prediction(label='danger', probability=0.93, tags=[('Siren', 0.81), ...], ...)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_runtime import audio as audio_io
from edge_runtime.classes import DECISION_THRESHOLD, dbfs
from edge_runtime.features import embed_offline, heard_audio
from edge_runtime.ffmpeg_file import iter_audio
from edge_runtime.framing import ChunkBuffer
from edge_runtime.manifest import ManifestError
from edge_runtime.options import THRESHOLD_FALLBACK
from edge_runtime.persistence import DIP_FLOOR, Persistence, held_cap, hold
from edge_runtime.providers import ort_message
from edge_runtime.scoring import Scorer
from edge_runtime.sessions import ModelSessions, load_sessions
from edge_runtime.window import FrameWindow, Window

log = logging.getLogger(__name__)



@dataclass
class WindowScore:
    """p(danger) of one window spanning ``[start_s, end_s)`` of its stream, and of each of its
    chunks scored alone (oldest first; they place an event's start and end).

    ``decision`` is what events are decided on: the window's p, or with chunk decisions the
    larger of it and the p of the chunks that are new in this window (see :class:`Detector`).
    """

    start_s: float
    end_s: float
    probability: float
    embedding: np.ndarray = field(repr=False)
    chunk_probabilities: list[float] = field(default_factory=list)
    audio_chunks: tuple[np.ndarray, ...] = field(default=(), repr=False)
    decision: float = 0.0
    class_scores: np.ndarray | None = field(default=None, repr=False)  # raw, manifest order
    label: str | None = None  # the deciding class (class models)
    classes: dict[str, float] | None = None  # class → score normalised by its threshold
    sustained_since_s: float | None = None  # a min_seconds class released: its run's first end
    held_back: str | None = None  # a min_seconds class over its threshold, not yet long enough


@dataclass
class Prediction:
    """Result of :meth:`Detector.predict`: the most dangerous window decides."""

    label: str
    probability: float
    tags: list[tuple[str, float]]
    window_probabilities: list[float]
    duration_s: float
    window_probability: float = 0.0
    danger_class: str | None = None


class DetectorStream:
    """Incremental scoring of one audio stream (float32 mono at the model rate).

    Class models: each window's normalised class scores pass through this stream's own
    :class:`~edge_runtime.persistence.Persistence` (``classes.min_seconds``) before they make
    p(danger), its class and the per-class scores; a level-gated window counts as below every
    threshold there. A chunk scored alone cannot decide for a persisted class that its window
    has not released either (``chunk_decisions``).
    """

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self._buffer = ChunkBuffer(detector.sessions.chunk_samples)
        self._window = FrameWindow(detector.sessions)
        self.samples = 0
        self._newest_scored = -1  # last chunk index already taken into a decision
        classes = detector.scorer.classes
        self._persistence = Persistence(() if classes is None else classes.min_seconds)

    @property
    def seconds(self) -> float:
        """Audio received so far, in seconds."""
        return self.samples / self.detector.sample_rate

    def push(self, block: np.ndarray) -> list[WindowScore]:
        """Add samples; score every window they complete."""
        block = np.asarray(block, np.float32).reshape(-1)
        self.samples += block.size
        windows = [w for c in self._buffer.push(block) if (w := self._window.add(c))]
        return self._score(windows)

    def finish(self) -> list[WindowScore]:
        """Flush the zero-padded partial chunk (and a short stream's single window)."""
        windows = []
        chunk, valid = self._buffer.flush()
        if chunk is not None and (w := self._window.add(chunk)):
            windows.append(w)
        if (w := self._window.finish()) is not None:
            windows.append(w)
        return self._score(windows, end_limit=self.seconds)

    def _score(self, windows: list[Window], end_limit: float | None = None) -> list[WindowScore]:
        if not windows:
            return []
        hop = self.detector.hop_s
        scorer = self.detector.scorer
        scores = scorer.score(np.stack([w.embedding for w in windows]))
        gate = scorer.classes.level_gate_dbfs if scorer.classes is not None else None
        names = scorer.class_names
        out = []
        for i, w in enumerate(windows):
            powers = w.chunk_powers  # chunks are equally long
            gated = gate is not None and dbfs(float(np.mean(powers))) < gate
            end = (w.last_chunk + 1) * hop
            if end_limit is not None:
                end = max(w.first_chunk * hop, min(end, end_limit))
            p, chunk_cap, since, held_back = float(scores.danger[i]), None, None, None
            row = None if scores.normalised is None else scores.normalised[i]
            k = None if scores.best is None else int(scores.best[i])
            if row is not None and self._persistence.active:
                above = (row >= DECISION_THRESHOLD) & (not gated)
                held = self._persistence.step(above, end, (row >= DIP_FLOOR) & (not gated))
                chunk_cap = self._persistence.unreleased(above, held)
                if held.any():  # the held classes' scores capped: p, class and scores agree
                    reached = np.flatnonzero(held & above)
                    if reached.size:  # the strongest class over its threshold, not yet lasting
                        held_back = names[int(reached[np.argmax(row[reached])])]
                    row = hold(row, held, self.detector.held_cap)
                    k = int(row.argmax())
                    p = float(np.float32(row[k]))
                if k is not None and self._persistence.persisted[k] and above[k] and not held[k]:
                    since = self._persistence.run_since(k)  # released: began with its run
            if gated:  # near-silence: under the quietest noise the model learnt as safe
                p = 0.0
            chunk_probs = [float(q) for q in self._chunk_danger(w.chunk_embeddings, chunk_cap)]
            if gate is not None:
                chunk_probs = [q if dbfs(pw) >= gate else 0.0
                               for q, pw in zip(chunk_probs, powers, strict=True)]
            fresh = [q for j, q in enumerate(chunk_probs, w.first_chunk)
                     if j > self._newest_scored]
            self._newest_scored = max(self._newest_scored, w.last_chunk)
            decision = max([p, *fresh]) if self.detector.chunk_decisions else p
            label = names[k] if names and k is not None else None
            raw = None if scores.classes is None else scores.classes[i]
            per_class = None if row is None else dict(zip(
                names, (float(v) for v in row), strict=True))
            out.append(WindowScore(w.first_chunk * hop, end, p, w.embedding, chunk_probs,
                                   w.audio_chunks, decision, raw, label, per_class, since,
                                   held_back))
        return out

    def _chunk_danger(self, embeddings: np.ndarray, cap: np.ndarray | None) -> np.ndarray:
        """p(danger) of each chunk alone, the ``cap`` classes (persisted, not released in
        this window) held like the window's."""
        scorer = self.detector.scorer
        if cap is None or not cap.any():
            return scorer.danger(embeddings)
        return hold(scorer.score(embeddings).normalised, cap,
                    self.detector.held_cap).max(axis=1).astype(np.float32)


class Detector:
    """Danger detector over one verified model dir (ONNX sessions from its manifest).

    Decisions: a 5 s window pools its chunks' frames; a danger sound much shorter than the
    window is diluted (mn04, held-out ESC-10 folds: a 2 s danger clip inside 10 s of safe
    background crossed the fold thresholds in 4 of 120 cases). With ``chunk_decisions``
    (default) each 1 s chunk is also scored alone — same classifier, its own frames pooled — and
    the decision is the larger p: the same test then found 85 of 120, at 4 of 120 false alarms on
    the safe backgrounds alone (0 with windows only). ``chunk_decisions=False`` decides on
    windows only, exactly as training's fold CV does.
    """

    def __init__(self, model_dir: str | os.PathLike[str] = "models_onnx", provider: str = "auto",
                 threads: int | None = None, threshold: float | None = None,
                 chunk_decisions: bool | None = None, *,
                 sessions: ModelSessions | None = None, expect_model: str | None = None) -> None:
        """``sessions``: already opened sessions of a model dir (then ``model_dir``,
        ``provider`` and ``threads`` are not used). ``chunk_decisions`` None: the manifest's
        choice (class models decide on windows; chunks still place events in time).
        ``expect_model``: refuse (ManifestError) a model dir whose id is not this."""
        self.sessions: ModelSessions = sessions or load_sessions(
            model_dir, provider, threads, expect_model=expect_model)
        self.chunk_decisions = (self.sessions.chunk_decisions if chunk_decisions is None
                                else chunk_decisions)
        self.scorer = Scorer(self.sessions)
        manifest_threshold = (DECISION_THRESHOLD if self.scorer.classes is not None
                              else self.sessions.threshold)
        self.threshold = float(threshold if threshold is not None
                               else manifest_threshold if manifest_threshold is not None
                               else THRESHOLD_FALLBACK)
        if not 0.0 < self.threshold < 1.0:  # NaN fails too
            raise ValueError(f"threshold must be a finite number in (0, 1), got {threshold!r}")
        self.held_cap = held_cap(self.threshold)  # a class still held: under any event
        self._check_runs()

    def _check_runs(self) -> None:
        """One window of noise through every graph at load (ms; under a second for Cnn14 on
        a Pi): a model dir whose
        manifest does not fit its graphs (chunk size, embedding width, ...) is refused now in
        one line, not with an onnxruntime error at the first audio."""
        samples = self.sessions.chunk_samples * self.sessions.window_chunks
        noise = np.random.default_rng(0).standard_normal(samples).astype(np.float32) * 0.05
        try:
            stream = self.stream()
            stream.push(noise)
            stream.finish()
            self.describe(noise)
        except Exception as exc:  # onnxruntime raises its own types
            raise ManifestError(f"{self.sessions.model_dir}: a test window through its graphs "
                                f"failed — does the manifest fit them? ({ort_message(exc)})"
                                ) from None

    @property
    def sample_rate(self) -> int:
        return self.sessions.sample_rate

    @property
    def hop_s(self) -> float:
        return self.sessions.chunk_samples / self.sample_rate

    @property
    def stride_s(self) -> float:
        """Seconds between scored windows (the decision interval): ``window_stride`` chunks."""
        return self.hop_s * self.sessions.window_stride

    @property
    def window_s(self) -> float:
        return self.hop_s * self.sessions.window_chunks

    @property
    def model_id(self) -> str:
        return self.sessions.model_id

    @property
    def provider(self) -> str:
        return self.sessions.provider

    def stream(self) -> DetectorStream:
        """A fresh incremental scorer for one stream."""
        return DetectorStream(self)

    def tags(self, embedding: np.ndarray, top: int = 3) -> list[tuple[str, float]]:
        """Top AudioSet tags of an embedding ([] when the model dir has no head)."""
        return self.scorer.tags(embedding, top)

    def describe(self, audio: np.ndarray | tuple[np.ndarray, ...],
                 top: int = 3) -> list[tuple[str, float]]:
        """Top AudioSet tags of a window's audio, from one whole-window backbone pass.

        The danger decision uses the streamed (per-chunk) embedding the classifier was trained
        on, but the AudioSet head was trained on whole clips: on streamed embeddings its tags
        are worse (mn04, ESC-10 dogs: "Dog"/"Bark" in the top 5 for 0.80 of clips streamed vs
        0.975 whole-window). So tags — only for the windows that explain an event — get their
        own pass, a few per event — on the window as the model heard it (raised by the
        loudness gain, where the model has one: the tags describe what decided).
        """
        if not self.scorer.has_tags or len(audio) == 0:
            return []
        if isinstance(audio, tuple):
            audio = np.concatenate(audio)
        return self.scorer.tags(embed_offline(self.sessions, heard_audio(self.sessions, audio)),
                                top)

    def predict(self, audio: str | os.PathLike[str] | np.ndarray,
                sample_rate: int | None = None) -> Prediction:
        """Score a file (any soundfile format, or .m4a/.mp4/… through ffmpeg; streamed) or an
        array (``sample_rate`` None: the model rate). Raises ``AudioError`` with a one-line
        message for unusable input."""
        stream = self.stream()
        scores: list[WindowScore] = []
        if isinstance(audio, (str, os.PathLike)):
            stats = audio_io.Decoded()
            for block in iter_audio(Path(audio), self.sample_rate, stats=stats):
                scores += stream.push(block)
            if stats.nonfinite:
                log.warning("%s: %d NaN/inf samples replaced by 0", audio, stats.nonfinite)
        else:
            scores += stream.push(audio_io.from_array(audio, sample_rate, self.sample_rate))
        scores += stream.finish()
        if not scores:  # e.g. 10 frames at 768 kHz: not one sample at the model's rate
            what = audio if isinstance(audio, (str, os.PathLike)) else "array"
            raise audio_io.AudioError(f"{what}: too short to score (no sample at "
                                      f"{self.sample_rate} Hz)")
        best = max(scores, key=lambda s: s.decision)
        return Prediction(
            label="danger" if best.decision >= self.threshold else "safe",
            probability=best.decision,
            tags=self.describe(best.audio_chunks),
            window_probabilities=[s.probability for s in scores],
            duration_s=stream.seconds,
            window_probability=max(s.probability for s in scores),
            danger_class=best.label if best.decision >= self.threshold else None,
        )
