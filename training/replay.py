"""Replay audio files through the daemon's own loop and keep what it decided.

Each file goes through exactly what ``edge-detect --input DIR --once --events`` runs:
``sources.file_stream`` → :class:`edge_runtime.daemon.Runner` (``Detector`` stream, the same
windows and chunk decisions, ``EventTracker`` with the CLI's default event rules) → a sink,
here one that collects the JSON event records. A file counts as flagged when an event names it.

With ``record=True`` every window's ``decision`` (and, for a class model, its raw
``class_scores``) is kept as well — a few numbers per window, never the audio or embedding —
so event rules can be re-simulated at other thresholds without running ONNX again
(:func:`count_events`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.audio import AudioError
from edge_runtime.daemon import Runner
from edge_runtime.detector import Detector
from edge_runtime.events import EventConfig, EventTracker
from edge_runtime.sinks import MemorySink
from edge_runtime.sources import file_stream
from training.labelled import LabelledClip
from training.logs import progress

log = logging.getLogger(__name__)


def cli_event_config(threshold: float) -> EventConfig:
    """Event rules at ``threshold`` with the ``edge-detect`` command's own option defaults
    (``--hysteresis``, ``--min-duration``, ``--cooldown``, …: each ``EventConfig`` field whose
    name, less a ``_s`` suffix, is an option of the command)."""
    from edge_runtime.cli import command

    defaults = {p.name: p.default for p in command.params}
    values = {}
    for f in dataclasses.fields(EventConfig):
        name = f.name.removesuffix("_s")
        if f.name not in ("threshold", "off_threshold") and defaults.get(name) is not None:
            values[f.name] = float(defaults[name])
    return EventConfig(threshold=float(threshold), **values)


def open_detector(model_dir: str | Path, threads: int | None = None) -> RecordingDetector:
    """The detector ``edge-detect --model DIR`` builds (manifest threshold, chunk decisions)."""
    return RecordingDetector(model_dir, provider="cpu", threads=threads)


@dataclass
class Trace:
    """Per-window numbers of one stream, in stream order."""

    start: np.ndarray
    end: np.ndarray
    decision: np.ndarray
    class_scores: np.ndarray | None  # [windows, K] raw class scores, class models only
    seconds: float


@dataclass
class FileRun:
    """What the daemon did with one file."""

    clip: LabelledClip
    seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    trace: Trace | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.events)


class _RecordingStream:
    """Wraps a detector stream; notes each window score's numbers as they pass."""

    def __init__(self, inner: Any, rows: list[tuple[float, float, float, Any]]) -> None:
        self.inner = inner
        self.rows = rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def seconds(self) -> float:
        return self.inner.seconds

    def _keep(self, scores: list[Any]) -> list[Any]:
        for s in scores:
            cs = getattr(s, "class_scores", None)
            self.rows.append((s.start_s, s.end_s, float(s.decision),
                              None if cs is None else np.asarray(cs, np.float32).copy()))
        return scores

    def push(self, block: np.ndarray) -> list[Any]:
        return self._keep(self.inner.push(block))

    def finish(self) -> list[Any]:
        return self._keep(self.inner.finish())


class RecordingDetector(Detector):
    """A :class:`Detector` whose streams also note every window's decision when asked."""

    rows: list[tuple[float, float, float, Any]] | None = None

    def stream(self) -> Any:
        inner = super().stream()
        return inner if self.rows is None else _RecordingStream(inner, self.rows)


def _trace(rows: list[tuple[float, float, float, Any]], seconds: float) -> Trace:
    cs = [r[3] for r in rows]
    scores = np.stack(cs) if rows and all(c is not None for c in cs) else None
    return Trace(np.array([r[0] for r in rows], np.float64),
                 np.array([r[1] for r in rows], np.float64),
                 np.array([r[2] for r in rows], np.float64), scores, seconds)


def replay(detector: RecordingDetector, clips: Iterable[LabelledClip],
           config: EventConfig | None = None, record: bool = False,
           desc: str = "replay") -> list[FileRun]:
    """Run each clip through a :class:`Runner` (one stream per file), in order.

    Unreadable files get ``error`` set (one line) and are not counted by callers.
    """
    config = config or cli_event_config(detector.threshold)
    sink = MemorySink(ends_only=True)  # each finished event's ``state: end`` record
    runner = Runner(detector, config, [sink])
    daemon_log = logging.getLogger("edge-detect")
    level = daemon_log.level
    if not daemon_log.isEnabledFor(logging.DEBUG):
        daemon_log.setLevel(logging.WARNING)  # one "file: peak, events" line per file is noise
    runs = []
    try:
        clips = list(clips)
        for clip in progress(clips, desc, "file"):
            run = FileRun(clip)
            sink.records.clear()
            rows: list[tuple[float, float, float, Any]] = []
            detector.rows = rows if record else None
            audio_before = runner.stats.audio_s
            try:
                if not runner.run_stream(file_stream(clip.path, detector.sample_rate)):
                    run.error = f"{clip.path}: unreadable audio (logged above)"
            except AudioError as exc:
                run.error = str(exc)
                log.error("%s", exc)
            run.seconds = runner.stats.audio_s - audio_before
            run.events = list(sink.records)
            if record:
                run.trace = _trace(rows, run.seconds)
            runs.append(run)
    finally:
        detector.rows = None
        daemon_log.setLevel(level)
    return runs


def count_events(trace: Trace, decision: np.ndarray, config: EventConfig,
                 hop_s: float) -> int:
    """Events the daemon's ``EventTracker`` would report for these window decisions.

    Chunk scores only place an event in time, never decide whether there is one, so counts
    need the window decisions alone.
    """
    if decision.size == 0 or decision.max() < config.threshold:
        return 0
    tracker = EventTracker(config, hop_s)
    n = 0
    for s, e, d in zip(trace.start, trace.end, decision, strict=True):
        n += sum(tr.kind == "end" for tr in tracker.update(float(s), float(e), float(d)))
    return n + sum(tr.kind == "end" for tr in tracker.close(trace.seconds))
