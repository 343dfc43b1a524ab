"""The per-stream loop: blocks → Detector stream → window scores → EventTracker → sinks.

Bad input is logged as one line naming the file and the problem; the loop then moves on. Each
event's lifecycle (start, update, end) reaches every sink as one typed record; each hop reaches
the observers (level, real-time factor, p(danger)); health changes (input flat, model failing)
are reported to them too.
"""

from __future__ import annotations

import logging
import math
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
from edge_runtime.lifecycle import (
    Health,
    Hop,
    Observer,
    StreamInfo,
    build_record,
    top_classes,
)
from edge_runtime.sinks import AudioHistory, ClipSink
from edge_runtime.sources import Stream

NARROWBAND_HZ = 16000  # a file recorded below this rate is said to lack highs (DEPLOY.md)
FAST_INPUT_S = 5.0  # a live input this far ahead of the wall clock is said to be fast, once
log = logging.getLogger("edge-detect")


class SilenceWatch:
    """Warn when a live input stays flat (peak-to-peak < ``floor``) for ``seconds``;
    ``on_change(alive)`` is called when it goes flat and when the signal comes back."""

    def __init__(self, sample_rate: int, seconds: float = 10.0, floor: float = 1e-4,
                 source: str = "input", on_change: Callable[[bool], None] | None = None) -> None:
        self.seconds = seconds
        self.limit = int(seconds * sample_rate)
        self.floor = floor
        self.source = source
        self.flat = 0
        self.warned = False
        self.on_change = on_change

    def check(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        if float(block.max() - block.min()) < self.floor:
            self.flat += block.size
            if self.flat >= self.limit and not self.warned:
                self.warned = True
                log.warning("%s: the signal has been flat for %.0f s — microphone dead, muted "
                            "or unplugged?", self.source, self.seconds)
                if self.on_change is not None:
                    self.on_change(False)
        else:
            self.flat = 0
            if self.warned:
                self.warned = False
                log.info("%s: the signal is back", self.source)
                if self.on_change is not None:
                    self.on_change(True)


@dataclass
class RunStats:
    """Totals over a run (what the CLI summarises at exit)."""

    streams: int = 0
    failed: int = 0
    started: int = 0
    events: int = 0
    audio_s: float = 0.0
    compute_s: float = 0.0


@dataclass
class _Peak:
    """What the peak window of an event says about it: its class and (lazily) its tags."""

    class_name: str | None
    tags: Callable[[], list[tuple[str, float]]] | list[tuple[str, float]] | None

    def resolved_tags(self) -> list[tuple[str, float]]:
        if callable(self.tags):
            self.tags = self.tags()
        return list(self.tags or [])


class _Meter:
    """Input level (dBFS) and real-time factor over the audio since the last hop."""

    def __init__(self) -> None:
        self.sumsq = 0.0
        self.samples = 0
        self.compute_s = 0.0
        self.level_dbfs = -120.0
        self.rtf = 0.0

    def block(self, block: np.ndarray) -> None:
        if block.size:
            self.sumsq += float(np.dot(block, block))
            self.samples += block.size

    def hop(self, sample_rate: int) -> None:
        if self.samples:
            self.level_dbfs = max(-120.0, 10.0 * math.log10(self.sumsq / self.samples + 1e-12))
            self.rtf = self.compute_s / (self.samples / sample_rate)
        self.sumsq, self.samples, self.compute_s = 0.0, 0, 0.0


class Runner:
    """Runs streams through one :class:`Detector` and fans the event lifecycle out to the sinks
    (and each hop to the sinks that are also :class:`Observer` s)."""

    def __init__(self, detector: Detector, config: EventConfig, sinks: list[Any],
                 history: AudioHistory | None = None, stop: threading.Event | None = None,
                 top_tags: int = 3, silence_s: float = 10.0) -> None:
        self.detector = detector
        self.config = config
        # Clip sinks first: they add the clip path to the record the other sinks publish.
        self.sinks = sorted(sinks, key=lambda s: not isinstance(s, ClipSink))
        self.observers = [s for s in self.sinks if isinstance(s, Observer)]
        self.history = history
        self.stop = stop or threading.Event()
        self._quiet_until: float | None = None  # see run_stream
        self._held_back: dict[int, Transition] = {}  # starts not reported yet (run_stream)
        self.last_event_end_s = 0.0
        self.paused = threading.Event()
        self.top_tags = top_tags
        self.silence_s = silence_s
        self.stats = RunStats()

    def set_paused(self, paused: bool) -> None:
        """Pause (blocks are read and dropped, an open event ends) or resume detection."""
        if paused != self.paused.is_set():
            log.warning("detection %s", "paused" if paused else "resumed")
        (self.paused.set if paused else self.paused.clear)()

    def report_health(self, source: str, healthy: bool, problem: str = "") -> None:
        """Tell the observers (notifications, MQTT, monitor) the detector is (un)healthy."""
        self._each(self.observers, "on_health", Health(source, healthy, problem))

    def close(self) -> None:
        """Close every sink (they flush what they hold)."""
        self._each(self.sinks, "close")

    def run_stream(self, stream: Stream, quiet_until_s: float | None = None) -> bool:
        """Process one stream to its end (or until stop). False if the input was bad.
        ``quiet_until_s``: events that begin before it are not reported (a file that grew
        after it was read: that part's events were reported then)."""
        self._quiet_until, self._held_back = quiet_until_s, {}
        self.last_event_end_s = 0.0  # where this stream's last reported event ended
        det = self.detector
        rate = det.sample_rate
        info = StreamInfo(stream.source, stream.is_file, stream.base_time, det.model_id, rate)
        scorer = det.stream()
        tracker = EventTracker(self.config, det.stride_s, chunk_s=det.hop_s)
        watch = None if stream.is_file else SilenceWatch(
            rate, self.silence_s, source=stream.source,
            on_change=lambda alive: self.report_health(
                stream.source, alive, "" if alive else
                f"input flat for {self.silence_s:.0f} s (microphone dead, muted or unplugged?)"))
        if self.history is not None:
            self.history.reset()
        self.stats.streams += 1
        meter = _Meter()
        peak, ok, events_before = 0.0, True, self.stats.events
        held_back: str | None = None  # a class heard over its threshold, never long enough
        released: set[str] = set()  # ... and those that did last long enough
        seen, offset, was_paused, fast_said, cut = 0, 0.0, False, False, ""
        started = time.perf_counter()

        def scored(scores: list[WindowScore]) -> None:
            nonlocal peak, held_back
            for score in scores:
                peak = max(peak, score.decision)
                held_back = held_back or score.held_back
                if score.sustained_since_s is not None and score.label:
                    released.add(score.label)
                since = score.sustained_since_s
                self._emit(tracker.update(score.start_s + offset, score.end_s + offset,
                                          score.decision, self._payload(score),
                                          score.chunk_probabilities,
                                          None if since is None else since + offset), info)
                if self.observers:
                    meter.hop(rate)
                    self._hop(score, offset, info, meter, tracker, stream)

        try:
            for block in stream.blocks:
                seen += block.size
                info.keep_up(seen / rate)
                if info.lead_s > FAST_INPUT_S and not fast_said:
                    fast_said = True
                    log.info("%s: audio arrives faster than real time (a recording?): its "
                             "events are timed by when it was read; as --input FILE a "
                             "recording is timed from its file", stream.source)
                if self.history is not None:
                    self.history.add(block)
                if watch is not None:
                    watch.check(block)
                if self.paused.is_set():
                    if not was_paused:
                        was_paused = True
                        self._emit(tracker.close(offset + scorer.seconds), info)
                elif was_paused:  # resume: a fresh scorer that continues at the stream time
                    was_paused, offset = False, (seen - block.size) / rate
                    scorer = det.stream()
                if not was_paused:
                    meter.block(block)
                    t0 = time.perf_counter()
                    scores = self._scored(scorer.push, block, stream.source)
                    meter.compute_s += time.perf_counter() - t0
                    scored(scores)
                if self.stop.is_set():
                    cut = " (stopped before its end)"
                    break
            if self.stop.is_set():  # also when the source ended because of the stop
                cut = " (stopped before its end)"
            if not was_paused:
                scored(self._scored(lambda _b: scorer.finish(), None, stream.source))
        except AudioError as exc:
            log.error("%s", exc)
            ok = False
            self.stats.failed += 1
        finally:
            if stream.health_name and not (self.stop.is_set() or stream.finished):
                # a supervised live input lost mid-stream (a camera rebooting): deaf before
                # the open event ends, so Home Assistant reads "unavailable", never "off"
                self.report_health(stream.health_name, False,
                                   "input lost: " + (stream.decoded.problem or "it ended"))
            self._emit(tracker.close(offset + scorer.seconds), info)
            self.stats.audio_s += seen / rate
            self.stats.compute_s += time.perf_counter() - started
        problems = [stream.decoded.problem] if stream.decoded.problem else []
        if stream.decoded.nonfinite:
            problems.append(f"{stream.decoded.nonfinite} NaN/inf samples replaced by 0")
        if ok and stream.is_file and problems:  # one line: the problems + what was read
            log.warning("%s: %s; %.1f s scored, peak p(danger) %.2f, %d event(s)",
                        stream.source, "; ".join(problems), seen / rate, peak,
                        self.stats.events - events_before)
        elif stream.decoded.nonfinite:
            log.warning("%s: %d NaN/inf samples replaced by 0", stream.source,
                        stream.decoded.nonfinite)
        elif ok and stream.is_file:
            narrow = stream.decoded.sample_rate
            narrow_text = (f" ({narrow} Hz audio: no highs above {narrow // 2000} kHz, where "
                           "gunshots and breaking glass are heard best)"
                           if 0 < narrow < NARROWBAND_HZ else "")
            events = self.stats.events - events_before
            log.info("%s: %.1f s%s, peak p(danger) %.2f, %d event(s)%s%s", stream.source,
                     seen / rate, cut, peak, events, self._held_note(held_back, released, events),
                     narrow_text)
        return ok

    def _held_note(self, held_back: str | None, released: set[str], events: int) -> str:
        """Why a file without an event peaked near the threshold: a class that must last
        (a smoke alarm's 6 s) reached its threshold, but never for long enough."""
        classes = self.detector.sessions.manifest.classes
        if events or held_back is None or held_back in released or classes is None:
            return ""
        need = classes.min_seconds[classes.names.index(held_back)]
        return f" ({held_back} heard, but not for the {need:g} s it must last)"

    def _scored(self, push: Callable[[Any], list[WindowScore]], block: Any,
                source: str) -> list[WindowScore]:
        """``push(block)``; a model failure is reported as unhealthy before it propagates."""
        try:
            return push(block)
        except AudioError:
            raise
        except Exception as exc:
            self.report_health(source, False, f"model failed: {type(exc).__name__}: {exc}")
            raise

    def _hop(self, score: WindowScore, offset: float, info: StreamInfo, meter: _Meter,
             tracker: EventTracker, stream: Stream) -> None:
        end = score.end_s + offset
        hop = Hop(source=info.source, time=info.time_at(end), offset_s=round(end, 3),
                  p_danger=round(float(score.decision), 4),
                  p_window=round(float(score.probability), 4), threshold=self.config.threshold,
                  top=top_classes(score), level_dbfs=round(meter.level_dbfs, 1),
                  rtf=round(meter.rtf, 4),
                  dropped_blocks=int(getattr(stream, "dropped_blocks", 0) or 0),
                  in_event=tracker.current is not None and tracker.current.confirmed)
        self._each(self.observers, "on_hop", hop)

    def _payload(self, score: WindowScore) -> _Peak | None:
        """What a window may tell about an event. Tags are computed lazily: only the peak window
        of an event is ever described (one whole-window backbone pass, see Detector.describe)."""
        if score.decision < self.config.off:
            return None
        tags = (partial(self.detector.describe, score.audio_chunks, self.top_tags)
                if self.detector.scorer.has_tags else None)
        return _Peak(getattr(score, "label", None), tags)

    def _emit(self, transitions: list[Transition], info: StreamInfo) -> None:
        for tr in transitions:
            ev = tr.event
            if self._quiet_until is not None and ev.start_s < self._quiet_until:
                # it began in the part an earlier reading reported: held back, reported only
                # if it runs on past that part (the alarm went on, or came back)
                if tr.kind == "start":
                    self._held_back[id(ev)] = tr
                    continue
                if ev.end_s <= self._quiet_until + self.detector.window_s:
                    if tr.kind == "end":
                        self._held_back.pop(id(ev), None)
                    continue
                held = self._held_back.pop(id(ev), None)
                if held is not None:
                    self._publish(held, info)
            self._publish(tr, info)

    def _publish(self, tr: Transition, info: StreamInfo) -> None:
        """One lifecycle step to every sink."""
        ev = tr.event
        if tr.kind == "start":  # numbered here: a held-back start never takes a number
            self.stats.started += 1
            ev.index = self.stats.started
        elif tr.kind == "end":
            self.stats.events += 1
            self.last_event_end_s = max(self.last_event_end_s, ev.end_s)
        peak = ev.peak_payload if isinstance(ev.peak_payload, _Peak) else None
        record = build_record(ev, info, tr.kind,  # type: ignore[arg-type]
                              peak.resolved_tags() if peak else [],
                              peak.class_name if peak else None)
        self._each(self.sinks, f"on_{tr.kind}", record)

    @staticmethod
    def _each(targets: list[Any], method: str, *args: Any) -> None:
        """Call ``method`` on each target; one failing sink never stops the others."""
        for target in targets:
            try:
                getattr(target, method)(*args)
            except Exception as exc:  # a sink's failure is logged, never fatal
                log.error("%s.%s failed: %s: %s", type(target).__name__, method,
                          type(exc).__name__, exc)
