"""Per-class minimum persistence: a class counts only once it has lasted (``classes.min_seconds``).

A real smoke alarm sounds for minutes; a microwave beep or a dish clink lasts 1–2 s but can
score like one. A class with ``min_seconds`` m > 0 is *held* in a window until it has been at
or above its own threshold (normalised score ≥ 0.5) in consecutive scored windows whose **ends**
lie at least m seconds apart: ``end(latest) − end(first of the run) ≥ m``. A window below the
threshold (or level-gated) ends the run. The window length is deliberately not counted: a 1 s
beep keeps every 5 s window that overlaps it high, so a span that includes the window measures
the window, not the sound. With 5 s windows every 2 s, m = 6 needs 4 consecutive windows, i.e.
11 s of audio in which every 5 s window holds the sound.

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


class Persistence:
    """Run tracker of one stream: which classes are still held in each window."""

    def __init__(self, min_seconds: Sequence[float]) -> None:
        self.min_seconds = np.asarray(min_seconds, np.float64)
        self.persisted = self.min_seconds > 0
        self.active = bool(self.persisted.any())
        self._since = np.full(self.min_seconds.shape, np.nan)  # end of each run's first window

    def step(self, above: np.ndarray, end_s: float) -> np.ndarray:
        """One scored window, in stream order: ``above`` [K] says which classes reach their
        threshold in it (False when the window is gated), ``end_s`` is its end. Returns [K]:
        True where the class is held in this window."""
        above = np.asarray(above, bool)
        if not self.active:
            return np.zeros(above.shape, bool)
        self._since = np.where(above, np.where(np.isnan(self._since), end_s, self._since),
                               np.nan)
        lasted = end_s - self._since  # nan (False below) where the class is not high
        return above & self.persisted & ~(lasted >= self.min_seconds - TOLERANCE)

    def run_since(self, k: int) -> float | None:
        """End of the first window of class ``k``'s current run (None: not high now)."""
        since = float(self._since[k]) if self._since.size else float("nan")
        return None if np.isnan(since) else since

    def unreleased(self, above: np.ndarray, held: np.ndarray) -> np.ndarray:
        """[K]: persisted classes not released in this window (``above``, ``held`` from its
        :meth:`step`): what a chunk scored alone may not decide for either."""
        return self.persisted & ~(np.asarray(above, bool) & ~np.asarray(held, bool))


def hold(normalised: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Normalised scores with the held classes capped at :data:`HELD_CAP` (same shape)."""
    norm = np.asarray(normalised, np.float64)
    return np.where(held, np.minimum(norm, HELD_CAP), norm)


def held_windows(above: np.ndarray, ends: np.ndarray,
                 min_seconds: Sequence[float]) -> np.ndarray:
    """:meth:`Persistence.step` over a whole stream: ``above`` [n, K], window ``ends`` [n]
    → held [n, K] (a fresh stream's state)."""
    above = np.asarray(above, bool)
    tracker = Persistence(min_seconds)
    if not tracker.active or not above.any():
        return np.zeros(above.shape, bool)
    return np.stack([tracker.step(row, float(e)) for row, e in zip(above, ends, strict=True)])


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
    level, first = 0.0, 0
    # for each window i, the run back to the newest j whose end is ≥ min_seconds before i's
    for i in range(scores.size):
        while first + 1 <= i and ends[i] - ends[first + 1] >= min_seconds - TOLERANCE:
            first += 1
        if ends[i] - ends[first] >= min_seconds - TOLERANCE:
            level = max(level, float(scores[first:i + 1].min()))
    return level
