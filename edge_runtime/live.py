"""Watchdog for live inputs (microphone, network stream): reopen with backoff, or give up.

A live stream ends when its device or connection stalls (no audio for ``--stall-timeout`` s,
detected by the source itself), when its signal stays flat for ``--flat-timeout`` s (checked
here), or when it simply ends. The source is then reopened with exponential backoff (1 s, 2 s …
30 s). If it cannot be reopened within ``--reopen-timeout`` s, :func:`supervise` returns False
and the process exits non-zero, so systemd's ``Restart=always`` starts a fresh one. Every
change of state is one log line and goes to ``on_health(source, healthy, problem)`` (the
runner's ``report_health``: MQTT diagnostics, notifications, the monitor).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from edge_runtime.backoff import Backoff
from edge_runtime.sources import Stream

log = logging.getLogger("edge-detect")

STABLE_S = 30.0  # a stream up this long resets the backoff


@dataclass
class Health:
    """State of one live source: starting, up, reconnecting, failed or stopped."""

    source: str
    state: str = "starting"
    detail: str = ""
    reconnects: int = 0
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "state": self.state, "detail": self.detail,
                "reconnects": self.reconnects, "since": round(self.since, 3)}


def flat_guard(stream: Stream, blocks: Iterator[np.ndarray], flat_s: float, sample_rate: int,
               floor: float = 1e-5) -> Iterator[np.ndarray]:
    """``blocks``, ending the stream when its signal stays flat for ``flat_s`` (0: never)."""
    limit = int(flat_s * sample_rate)
    flat = 0
    try:
        for block in blocks:
            yield block
            if limit <= 0 or block.size == 0:
                continue
            if float(block.max() - block.min()) < floor:
                flat += block.size
                if flat >= limit:
                    stream.decoded.problem = f"signal flat for {flat_s:.0f} s"
                    return
            else:
                flat = 0
    finally:  # release the device/connection now, not whenever the generator is collected
        close = getattr(blocks, "close", None)
        if close is not None:
            close()


# The longest wait between two attempts to reopen a live source: a camera back after a reboot
# is heard again within this (a smoke alarm needs 11 s more before it is reported); a failed
# attempt costs a process start and a connection, nothing a Pi notices every 10 s.
REOPEN_MAX_DELAY_S = 10.0


class Supervisor:
    """Open → run → (stall/end/flat) → reopen with backoff, until stopped or given up."""

    def __init__(self, name: str, opener: Callable[[bool], Stream],
                 run: Callable[[Stream], object], stop: threading.Event, sample_rate: int,
                 reopen_timeout_s: float = 300.0, flat_s: float = 0.0,
                 retry_errors: tuple[type[BaseException], ...] = (RuntimeError, OSError),
                 on_health: Callable[[str, bool, str], None] | None = None,
                 fatal_errors: tuple[type[BaseException], ...] = ()) -> None:
        self.name, self.opener, self.run, self.stop = name, opener, run, stop
        self.sample_rate = sample_rate
        self.reopen_timeout_s, self.flat_s = reopen_timeout_s, flat_s
        self.retry_errors, self.fatal_errors = retry_errors, fatal_errors
        self.on_health = on_health
        self._reported = True
        self.health = Health(name)

    def _set(self, state: str, detail: str = "") -> None:
        if state == self.health.state and detail == self.health.detail:
            return
        self.health.state, self.health.detail, self.health.since = state, detail, time.time()
        if state == "stopped" and self.stop.is_set():
            return  # shutting down: neither news nor healthy (it was not heard again)
        healthy = state in ("up", "stopped")
        if self.on_health is None or (healthy == self._reported and state != "failed"):
            return  # only changes between healthy and not (a retry is not news)
        self._reported = healthy
        try:
            self.on_health(self.name, healthy, "" if healthy else f"{state}: {detail}")
        except Exception as exc:  # a sink must never stop the watchdog
            log.error("%s: health report failed (%s)", self.name, exc)

    def __call__(self) -> bool:
        """Run until ``stop`` (True) or until the source cannot be reopened in time (False)."""
        backoff = Backoff(1.0, REOPEN_MAX_DELAY_S)
        down_since: float | None = None
        reopening = opened_once = False
        while not self.stop.is_set():
            try:
                stream = self.opener(reopening)
            except self.fatal_errors:
                self._set("failed", "cannot be opened")
                raise
            except self.retry_errors as exc:
                now = time.monotonic()
                down_since = down_since if down_since is not None else now
                detail = " ".join(str(exc).split())
                left = self.reopen_timeout_s - (now - down_since)
                if left <= 0:
                    log.error("%s: could not be %s within %.0f s (%s); exiting so the "
                              "service manager can restart edge-detect", self.name,
                              "reopened" if opened_once else "opened", self.reopen_timeout_s,
                              detail)
                    self._set("failed", detail)
                    return False
                delay = min(backoff.next(), left)
                self._set("reconnecting", detail)
                log.warning("%s: cannot open (%s); retry in %.0f s, giving up in %.0f s",
                            self.name, detail, delay, left)
                reopening = True
                self.stop.wait(delay)
                continue
            if self.stop.is_set():
                break
            if reopening and opened_once:
                self.health.reconnects += 1
                log.warning("%s: reopened (reconnect #%d)", self.name, self.health.reconnects)
            elif reopening:  # down when edge-detect started: never open before
                log.warning("%s: opened at last", self.name)
            opened_once = True
            stream.health_name = self.name  # a loss the runner reports is this source's
            self._set("up")
            down_since, opened = None, time.monotonic()
            guarded = flat_guard(stream, stream.blocks, self.flat_s, self.sample_rate)
            stream.blocks = guarded
            try:
                self.run(stream)
            finally:
                guarded.close()
            if self.stop.is_set():
                break
            if stream.finished:  # ended for good (a recording, or --once): nothing to reopen
                log.info("%s: %s; done", self.name, stream.decoded.problem or "input ended")
                self._set("stopped")
                return True
            if time.monotonic() - opened >= STABLE_S:
                backoff.reset()
            down_since = time.monotonic()
            why = stream.decoded.problem or "input ended"
            self._set("reconnecting", why)
            delay = backoff.next()
            log.warning("%s: %s; reopening in %.0f s", self.name, why, delay)
            reopening = True
            self.stop.wait(delay)
        self._set("stopped")
        return True
