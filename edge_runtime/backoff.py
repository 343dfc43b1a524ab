"""Exponential backoff and a rate-limited error line, for sources that fail and come back."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("edge-detect")


class Backoff:
    """Delays ``initial, 2·initial, 4·initial … maximum``; :meth:`reset` after a success."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class RateLimitedLog:
    """One line when a problem starts, then at most one per backoff delay (1 s, 2 s … 5 min)
    saying how often it recurred, and one line when it clears."""

    def __init__(self, initial: float = 1.0, maximum: float = 300.0) -> None:
        self.backoff = Backoff(initial, maximum)
        self.failing = False
        self.repeats = 0
        self._quiet_until = 0.0

    def error(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if self.failing and now < self._quiet_until:
            self.repeats += 1
            return
        suffix = (f" (again; {self.repeats} more time(s) since the last line)"
                  if self.failing else "")
        log.error(message + suffix, *args)
        self.failing, self.repeats = True, 0
        self._quiet_until = now + self.backoff.next()

    def ok(self, message: str, *args: object) -> None:
        if self.failing:
            log.info(message, *args)
        self.failing, self.repeats = False, 0
        self.backoff.reset()
