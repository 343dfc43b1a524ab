"""Danger events from a stream of window probabilities: a pure state machine, no I/O.

Rules (all times in seconds from the start of the stream):

* An event *opens* when a window's p(danger) ≥ ``threshold`` and stays open while windows stay
  ≥ ``off_threshold`` (hysteresis, default ``threshold - 0.1``).
* It is *confirmed* (reported as started) once its windows above the off-threshold cover at
  least ``min_duration_s``; shorter blips are dropped silently.
* After it falls below the off-threshold it waits ``cooldown_s``; a window ≥ ``threshold``
  within that time continues the same event, so a 10 s siren with a dip is one event.
* While a confirmed event stays active an ``update`` transition is emitted at most every
  ``update_every_s`` seconds of audio (0: never), so a long alarm is reported while it lasts.
* Times — the window *decides*, its chunks *locate*. A 5 s window may need several seconds of
  danger before it crosses the threshold, so its end is a late onset. When the caller passes
  each chunk's own p(danger) (the chunk's frames pooled alone and classified), the event starts
  at the first chunk of the opening window with p ≥ ``off`` (never before the previous event's
  end) and ends with the last such chunk of its last active window. Without chunk scores (or
  when no chunk alone is confident) a window's evidence is attributed to its newest chunk for
  the onset and to its oldest chunk for the offset; the first window of a stream has no earlier
  context and starts the event at the window's start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EventConfig:
    """Event rules. ``off_threshold`` None means ``threshold - hysteresis`` (floored at 0)."""

    threshold: float = 0.5
    hysteresis: float = 0.1
    off_threshold: float | None = None
    min_duration_s: float = 1.0
    cooldown_s: float = 2.0
    update_every_s: float = 0.0

    @property
    def off(self) -> float:
        if self.off_threshold is not None:
            return min(self.off_threshold, self.threshold)
        return max(0.0, self.threshold - self.hysteresis)


@dataclass
class Event:
    """One danger event; ``peak_payload`` is whatever the caller attached to the peak window."""

    start_s: float
    end_s: float
    peak: float
    prob_sum: float = 0.0
    windows: int = 0
    active_s: float = 0.0
    confirmed: bool = False
    peak_payload: Any = None
    index: int = 0  # its number in the run, given when its start is reported (daemon.Runner)
    reported_s: float = 0.0  # stream time of the last start/update transition

    @property
    def mean(self) -> float:
        return self.prob_sum / max(1, self.windows)


@dataclass
class Transition:
    """``kind`` is ``"start"`` (event confirmed), ``"update"`` (still going) or ``"end"``."""

    kind: str
    event: Event


ONSET_HISTORY_S = 60.0  # the longest classes.min_seconds (edge_runtime.manifest)


@dataclass
class EventTracker:
    """Feed ``update`` one window at a time; it returns the start/end transitions it caused."""

    config: EventConfig
    hop_s: float  # audio between consecutive windows (their stride)
    current: Event | None = None
    quiet_since: float | None = None
    last_end: float = 0.0
    _seen: bool = field(default=False, repr=False)
    # (end, onset) of the latest windows: where an event decided later began (``since_s``)
    _onsets: deque[tuple[float, float]] = field(init=False, repr=False)
    chunk_s: float | None = None  # length of the chunks ``chunk_probs`` score (default hop_s)
    _runs_on: bool = field(default=True, repr=False)  # the last active window hot to its end

    def __post_init__(self) -> None:
        # windows back to where the longest persisted run (min_seconds ≤ 60 s) began, and more
        self._onsets = deque(maxlen=int(2 * ONSET_HISTORY_S / max(self.hop_s, 1e-3)) + 8)

    def _located(self, win_start: float, win_end: float,
                 chunk_probs: Sequence[float] | None) -> tuple[float | None, float | None]:
        """(start of the first, end of the last) chunk with p ≥ off; (None, None) if none."""
        if not chunk_probs:
            return None, None
        chunk = self.chunk_s or self.hop_s
        hot = [i for i, q in enumerate(chunk_probs) if q >= self.config.off
               and win_start + (i + 1) * chunk > self.last_end + 1e-9]
        if not hot:
            return None, None
        start = max(win_start + hot[0] * chunk, self.last_end)
        return start, min(win_end, win_start + (hot[-1] + 1) * chunk)

    def update(self, win_start: float, win_end: float, p: float, payload: Any = None,
               chunk_probs: Sequence[float] | None = None,
               since_s: float | None = None) -> list[Transition]:
        """One window's p(danger); ``chunk_probs`` (oldest first) place the event in time;
        ``since_s``: the window decides for a class that had to last (``min_seconds``) and
        whose run's first window ended there — an event opened now starts with that window."""
        first = not self._seen
        self._seen = True
        onset = win_start if first else max(win_start, win_end - self.hop_s)
        offset = min(win_end, win_start + self.hop_s)
        hot_start, hot_end = self._located(win_start, win_end, chunk_probs)
        # the shortest span a window's evidence can mean: a stride when the window alone decides
        # where, one chunk when its chunks place it (a stride of 2 chunks must not stretch a
        # located 1 s sound to 2 s, nor its end past the last hot chunk)
        least = self.hop_s
        if hot_start is not None:
            onset, offset, least = hot_start, hot_end, self.chunk_s or self.hop_s
        self._onsets.append((win_end, onset))
        cfg, ev, out = self.config, self.current, []
        if ev is not None and self.quiet_since is not None:
            if p >= cfg.threshold:
                self.quiet_since = None  # merged back into the same event
            elif win_end - self.quiet_since >= cfg.cooldown_s + self.hop_s - 1e-9:
                out.append(self._finish())
                ev = None
            else:
                return out
        if ev is None:
            if p < cfg.threshold:
                return out
            if since_s is not None:  # placed as that earlier window placed its sound
                began = [at for end, at in self._onsets if abs(end - since_s) < 1e-6]
                if began:  # never into the previous event
                    onset = min(onset, max(began[-1], self.last_end))
            ev = self.current = Event(start_s=onset, end_s=max(offset, onset), peak=p,
                                      peak_payload=payload)
        if p >= cfg.off:
            ev.end_s = max(ev.end_s, offset, ev.start_s + min(least, win_end - win_start))
            self._runs_on = hot_end is None or hot_end >= win_end - 1e-9
            ev.windows += 1
            ev.prob_sum += p
            ev.active_s += self.hop_s
            if p > ev.peak:
                ev.peak, ev.peak_payload = p, payload
            if not ev.confirmed and ev.active_s >= cfg.min_duration_s - 1e-9:
                ev.confirmed = True  # numbered when reported (daemon.Runner)
                ev.reported_s = win_end
                out.append(Transition("start", ev))
            elif (ev.confirmed and cfg.update_every_s > 0
                  and win_end - ev.reported_s >= cfg.update_every_s - 1e-9):
                ev.reported_s = win_end
                out.append(Transition("update", ev))
        elif ev.confirmed:
            self.quiet_since = max(win_start, win_end - self.hop_s)
            if win_end - self.quiet_since >= cfg.cooldown_s + self.hop_s - 1e-9:
                out.append(self._finish())  # the same rule as below: cooldown 0 ends it now
        else:
            self.current = None  # a blip shorter than min_duration_s
        return out

    def close(self, now_s: float | None = None) -> list[Transition]:
        """End of stream or shutdown: finish a confirmed event (an unconfirmed one is dropped).

        ``now_s`` (the end of the audio seen) extends an event that is still active, unless
        its last window's chunks placed the sound's end earlier.
        """
        ev = self.current
        if ev is None or not ev.confirmed:
            self.current, self.quiet_since = None, None
            return []
        if self.quiet_since is None and now_s is not None and self._runs_on:
            ev.end_s = max(ev.end_s, now_s)
        return [self._finish()]

    def _finish(self) -> Transition:
        ev = self.current
        self.current, self.quiet_since = None, None
        self.last_end = ev.end_s
        return Transition("end", ev)
