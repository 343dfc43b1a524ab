"""Per-class minimum persistence: a class counts only once it has lasted (``classes.min_seconds``).

A real smoke alarm sounds for minutes; a microwave beep or a dish clink lasts 1–2 s but can
score like one. A class with ``min_seconds`` m > 0 is *held* in a window until it has been at
or above its own threshold (normalised score ≥ 0.5) in a run of scored windows whose **ends**
lie at least m seconds apart: ``end(latest) − end(first of the run) ≥ m``, from an above
window to an above window. One window below the threshold inside a run does not end it
(:data:`MAX_DIP`) if it stays at :data:`DIP_FLOOR` (0.4, as an event stays open; a
level-gated window never does):
a beeping smoke alarm under a clatter of dishes scored 0.50, 0.42, 0.50, 0.50, 0.50, 0.41,
0.50 in its windows and was never released. Two in a row, or one lower (the quiet between two
clinks), do.
The window length is deliberately not counted: a 1 s beep keeps every 5 s window that overlaps
it high, so a span that includes the window measures the window, not the sound. With 5 s
windows every 2 s, m = 6 needs 4 windows, i.e. 11 s of audio in which (all but single) 5 s
windows hold the sound.

A smoke or CO alarm that beeps in groups with long quiet between (a CO alarm's temporal-4:
four 0.1 s beeps, then 5 s of quiet) leaves about one 5 s window in three without enough of
its sound: each such dip is deep. So a run also counts when it spans **twice** m
(:data:`SPARSE_FACTOR`) with no two windows in a row below the threshold, however deep each
single dip: 7 windows, 13 s of audio for m = 6 — longer than two or three clinks with quiet
between them last.

While held, the class's normalised score is capped at :data:`HELD_CAP` (just below the 0.5
decision threshold), so it cannot open an event; once released it passes unchanged until the
run breaks, and the event it opens starts where the run began (:meth:`Persistence.run_since`),
not at the release. Data flows one way: class scores → :class:`Persistence` → p(danger) →
events. One instance per stream (its state is that stream's runs); training replays reuse
:func:`held_windows` on cached scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HELD_CAP = 0.499  # a held class's normalised score: below the 0.5 decision threshold
TOLERANCE = 1e-9  # window times are sums of float chunk lengths
MAX_DIP = 1  # scored windows below the threshold in a row that a run survives ...
DIP_FLOOR = 0.4  # ... if they stay this high (normalised; the event rules' default off level)
DIP_RATIO = DIP_FLOOR / 0.5  # the same in raw scores: a dip must reach this share of t
SPARSE_FACTOR = 2.0  # a run with single dips of any depth counts once it spans this times m


class Persistence:
    """Run tracker of one stream: which classes are still held in each window."""

    def __init__(self, min_seconds: Sequence[float]) -> None:
        self.min_seconds = np.asarray(min_seconds, np.float64)
        self.persisted = self.min_seconds > 0
        self.active = bool(self.persisted.any())
        self._since = np.full(self.min_seconds.shape, np.nan)  # end of each run's first window
        self._sparse = np.full(self.min_seconds.shape, np.nan)  # ... of its sparse run
        self._dips = np.zeros(self.min_seconds.shape, int)  # windows below, in a row
        self._end = 0.0  # the latest window's end

    def step(self, above: np.ndarray, end_s: float,
             near: np.ndarray | None = None) -> np.ndarray:
        """One scored window, in stream order: ``above`` [K] says which classes reach their
        threshold in it (False when the window is gated), ``near`` which reach
        :data:`DIP_FLOOR` (None: none below the threshold), ``end_s`` is its end. Returns
        [K]: True where the class is held in this window."""
        above = np.asarray(above, bool)
        if not self.active:
            return np.zeros(above.shape, bool)
        near = above if near is None else np.asarray(near, bool) | above
        self._end = end_s
        self._dips = np.where(above, 0, self._dips + 1)
        since = np.where((self._dips > MAX_DIP) | ~near, np.nan, self._since)
        self._since = np.where(above & np.isnan(since), end_s, since)
        sparse = np.where(self._dips > MAX_DIP, np.nan, self._sparse)
        self._sparse = np.where(above & np.isnan(sparse), end_s, sparse)
        lasted = np.where(above, end_s - self._since, np.nan)  # nan (False) below
        lasted_sparse = np.where(above, end_s - self._sparse, np.nan)
        released = ((lasted >= self.min_seconds - TOLERANCE)
                    | (lasted_sparse >= SPARSE_FACTOR * self.min_seconds - TOLERANCE))
        return above & self.persisted & ~released

    def run_since(self, k: int) -> float | None:
        """End of the first window of class ``k``'s current run (None: not high now); its
        sparse run's when only that one spans long enough (a beeping pattern began there)."""
        since = float(self._since[k]) if self._since.size else float("nan")
        if np.isnan(since):
            return None
        if self._end - since >= self.min_seconds[k] - TOLERANCE:
            return since
        return float(self._sparse[k])  # set whenever ``since`` is, and never later

    def unreleased(self, above: np.ndarray, held: np.ndarray) -> np.ndarray:
        """[K]: persisted classes not released in this window (``above``, ``held`` from its
        :meth:`step`): what a chunk scored alone may not decide for either."""
        return self.persisted & ~(np.asarray(above, bool) & ~np.asarray(held, bool))


def held_cap(threshold: float) -> float:
    """Where a held class's normalised score is capped for an event ``threshold``:
    :data:`HELD_CAP`, or just under a lower one (``--threshold 0.45``), so it opens no event."""
    return min(HELD_CAP, threshold - 0.001)


def hold(normalised: np.ndarray, held: np.ndarray, cap: float = HELD_CAP) -> np.ndarray:
    """Normalised scores with the held classes capped at ``cap`` (same shape)."""
    norm = np.asarray(normalised, np.float64)
    return np.where(held, np.minimum(norm, cap), norm)


def held_windows(above: np.ndarray, ends: np.ndarray, min_seconds: Sequence[float],
                 near: np.ndarray | None = None) -> np.ndarray:
    """:meth:`Persistence.step` over a whole stream: ``above`` and ``near`` [n, K], window
    ``ends`` [n] → held [n, K] (a fresh stream's state)."""
    above = np.asarray(above, bool)
    tracker = Persistence(min_seconds)
    if not tracker.active or not above.any():
        return np.zeros(above.shape, bool)
    near = above if near is None else np.asarray(near, bool)
    return np.stack([tracker.step(row, float(e), close) for row, e, close
                     in zip(above, ends, near, strict=True)])


def release_level(scores: np.ndarray, ends: np.ndarray, min_seconds: float) -> float:
    """The highest raw threshold at which one class of a stream would be released somewhere
    (:meth:`Persistence.step`'s rule inverted): over every run of consecutive windows whose
    ends span ``min_seconds``, the run's lowest score; the largest of those. With
    ``min_seconds`` 0 it is the stream's peak; 0.0 when no run can span it (a stream that
    short never releases the class). ``scores`` [n] and ``ends`` [n] are in stream order.

    A threshold search over safe recordings uses it as the per-file maximum is used for
    unpersisted classes: a recording raises the class at threshold t exactly when
    ``release_level ≥ t``."""
    scores = np.asarray(scores, np.float64)
    ends = np.asarray(ends, np.float64)
    if scores.size == 0:
        return 0.0
    if min_seconds <= 0:
        return float(scores.max())
    return max(_run_level(scores, ends, min_seconds, DIP_RATIO),
               _run_level(scores, ends, SPARSE_FACTOR * min_seconds, 0.0))


def _run_level(scores: np.ndarray, ends: np.ndarray, span_s: float, dip_ratio: float) -> float:
    """The highest t at which a run of windows spanning ``span_s`` holds: its ends at or
    above t, no two neighbours inside both below t (MAX_DIP = 1), and (``dip_ratio`` > 0)
    none under ``dip_ratio``·t. A run releasing at window i can be taken to start at the
    newest j spanning ``span_s``, or the one before it when that one dips: j ∈ {first,
    first - 1}; its level is min(s[j], s[i], the smallest neighbour-pair max inside, the
    smallest score / dip_ratio)."""
    pair = np.maximum(scores[:-1], scores[1:])  # pair[k]: windows k and k + 1
    level, first = 0.0, 0
    for i in range(scores.size):
        while first + 1 <= i and ends[i] - ends[first + 1] >= span_s - TOLERANCE:
            first += 1
        if ends[i] - ends[first] < span_s - TOLERANCE:
            continue
        for j in (first, first - 1):
            if j >= 0:
                inside = float(pair[j:i].min()) if i > j else 1.0
                floor = (float(scores[j:i + 1].min()) / dip_ratio if dip_ratio > 0
                         else float("inf"))
                level = max(level, min(float(scores[j]), float(scores[i]), inside, floor))
    return level
