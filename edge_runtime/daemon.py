"""The per-stream loop: blocks → Detector stream → window scores → EventTracker → sinks.

Bad input is logged as one line naming the file and the problem; the loop then moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from edge_runtime.audio import AudioError
from edge_runtime.detector import Detector, WindowScore
from edge_runtime.events import EventConfig, EventTracker, Transition
from edge_runtime.sinks import AudioHistory, ClipSink, StreamInfo, event_record
from edge_runtime.sources import Stream

log = logging.getLogger("edge-detect")


class SilenceWatch:
    """Warn once when a live input stays flat (peak-to-peak < ``floor``) for ``seconds``."""

    def __init__(self, sample_rate: int, seconds: float = 10.0, floor: float = 1e-4,
                 source: str = "input") -> None:
        self.seconds = seconds
        self.limit = int(seconds * sample_rate)
        self.floor = floor
        self.source = source
        self.flat = 0
        self.warned = False

    def check(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        if float(block.max() - block.min()) < self.floor:
            self.flat += block.size
            if self.flat >= self.limit and not self.warned:
                self.warned = True
                log.warning("%s: the signal has been flat for %.0f s — microphone dead, muted "
                            "or unplugged?", self.source, self.seconds)
        else:
            self.flat = 0


@dataclass
class RunStats:
    """Totals over a run (what the CLI summarises at exit)."""

    streams: int = 0
    failed: int = 0
    started: int = 0
    events: int = 0
    audio_s: float = 0.0
    compute_s: float = 0.0


class Runner:
    """Runs streams through one :class:`Detector` and fans events out to the sinks."""

    def __init__(self, detector: Detector, config: EventConfig, sinks: list[Any],
                 history: AudioHistory | None = None, stop: threading.Event | None = None,
                 top_tags: int = 3, silence_s: float = 10.0) -> None:
        self.detector = detector
        self.config = config
        # Clip sinks first: they add the clip path to the record the JSON sink writes.
        self.sinks = sorted(sinks, key=lambda s: not isinstance(s, ClipSink))
        self.history = history
        self.stop = stop or threading.Event()
        self.top_tags = top_tags
        self.silence_s = silence_s
        self.stats = RunStats()

    def run_stream(self, stream: Stream) -> bool:
        """Process one stream to its end (or until stop). False if the input was bad."""
        det = self.detector
        info = StreamInfo(stream.source, stream.is_file, stream.base_time, det.model_id,
                          det.sample_rate)
        scorer = det.stream()
        tracker = EventTracker(self.config, det.hop_s)
        watch = None if stream.is_file else SilenceWatch(det.sample_rate, self.silence_s,
                                                         source=stream.source)
        if self.history is not None:
            self.history.reset()
        self.stats.streams += 1
        peak, ok, events_before = 0.0, True, self.stats.events
        started = time.perf_counter()
        try:
            for block in stream.blocks:
                if self.history is not None:
                    self.history.add(block)
                if watch is not None:
                    watch.check(block)
                for score in scorer.push(block):
                    peak = max(peak, score.decision)
                    self._emit(tracker.update(score.start_s, score.end_s, score.decision,
                                              self._payload(score),
                                              score.chunk_probabilities), info)
                if self.stop.is_set():
                    break
            for score in scorer.finish():
                peak = max(peak, score.decision)
                self._emit(tracker.update(score.start_s, score.end_s, score.decision,
                                          self._payload(score), score.chunk_probabilities),
                           info)
        except AudioError as exc:
            log.error("%s", exc)
            ok = False
            self.stats.failed += 1
        finally:
            self._emit(tracker.close(scorer.seconds), info)
            self.stats.audio_s += scorer.seconds
            self.stats.compute_s += time.perf_counter() - started
        problems = [stream.decoded.problem] if stream.decoded.problem else []
        if stream.decoded.nonfinite:
            problems.append(f"{stream.decoded.nonfinite} NaN/inf samples replaced by 0")
        if ok and stream.is_file and problems:  # one line: the problems + what was read
            log.warning("%s: %s; %.1f s scored, peak p(danger) %.2f, %d event(s)",
                        stream.source, "; ".join(problems), scorer.seconds, peak,
                        self.stats.events - events_before)
        elif stream.decoded.nonfinite:
            log.warning("%s: %d NaN/inf samples replaced by 0", stream.source,
                        stream.decoded.nonfinite)
        elif ok and stream.is_file:
            log.info("%s: %.1f s, peak p(danger) %.2f, %d event(s)", stream.source,
                     scorer.seconds, peak, self.stats.events - events_before)
        return ok

    def _payload(self, score: WindowScore) -> Callable[[], list[tuple[str, float]]] | None:
        """Tags of a window that may explain an event, computed lazily: only the peak window of
        an event is ever described (one whole-window backbone pass, see Detector.describe)."""
        if score.decision < self.config.off or not self.detector.scorer.has_tags:
            return None
        return partial(self.detector.describe, score.audio_chunks, self.top_tags)

    def _emit(self, transitions: list[Transition], info: StreamInfo) -> None:
        for tr in transitions:
            if callable(tr.event.peak_payload):
                tr.event.peak_payload = tr.event.peak_payload()
            if tr.kind == "start":
                self.stats.started += 1
                tr.event.index = self.stats.started
                for sink in self.sinks:
                    sink.started(tr.event, info)
                continue
            self.stats.events += 1
            record = event_record(tr.event, info)
            for sink in self.sinks:
                try:
                    sink.finished(tr.event, info, record)
                except OSError as exc:
                    log.error("%s: could not write event (%s)", type(sink).__name__, exc)
