"""Push notifications: ntfy topics or any webhook (JSON POST), from a bounded background queue.

``--notify URL`` (repeatable). A URL is treated as an ntfy topic when it is written
``ntfy+https://host/topic`` or its host name contains ``ntfy`` (``https://ntfy.sh/my-topic``);
``webhook+https://…`` or any other http(s) URL gets a JSON POST. ntfy gets its own headers
(``Title``, ``Priority``, ``Tags``) and the text as the body.

One notification per event start, at most one per class every ``cooldown_s``; smoke/CO alarms,
glass break, gunshots and explosions are ``urgent``. The text says why (the peak window's tags).
A failed delivery is retried with backoff; detection never waits for the network (the queue is
bounded: when full the oldest notification is dropped with a log line). The detector's own health
(input dead, model failing) is notified separately, once per change.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from edge_runtime.lifecycle import EventRecord, Health, Hop

log = logging.getLogger("edge-detect")

URGENT = ("smoke", "co_alarm", "carbon", "fire", "glass", "gunshot", "shot", "explosion")
HIGH = ("scream", "siren", "alarm", "crying", "baby", "danger")


def priority(event_type: str) -> str:
    """ntfy priority of a class: ``urgent`` (smoke/CO alarm, glass break, gunshot, explosion),
    ``high`` (scream, siren, crying, unnamed danger) or ``default``."""
    low = event_type.lower()
    if any(w in low for w in URGENT):
        return "urgent"
    if any(w in low for w in HIGH):
        return "high"
    return "default"


@dataclass(frozen=True)
class Target:
    kind: str  # "ntfy" | "webhook"
    url: str


def parse_target(url: str) -> Target:
    """``--notify`` URL → :class:`Target` (ValueError names the problem)."""
    kind = None
    for prefix in ("ntfy+", "webhook+"):
        if url.startswith(prefix):
            kind, url = prefix[:-1], url[len(prefix):]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--notify {url!r}: expected an http(s) URL (ntfy topic or webhook)")
    if kind is None:
        kind = "ntfy" if "ntfy" in parts.hostname else "webhook"
    return Target(kind, url)


@dataclass
class Notification:
    title: str
    message: str
    priority: str
    tags: list[str]
    kind: str  # "event" | "health"
    data: dict[str, Any] = field(default_factory=dict)


def _header(text: str) -> str:
    """HTTP headers are latin-1: non-ASCII text goes RFC 2047 encoded (ntfy decodes it)."""
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="


def _pretty(name: str) -> str:
    return name.replace("_", " ").capitalize()


class Notifier:
    """A :class:`~edge_runtime.lifecycle.Sink` and ``Observer`` that sends notifications."""

    def __init__(self, urls: list[str], *, cooldown_s: float = 300.0, queue_size: int = 100,
                 timeout_s: float = 5.0, attempts: int = 4, backoff_s: float = 1.0,
                 drain_timeout_s: float = 10.0, host: str | None = None) -> None:
        self.targets = [parse_target(u) for u in urls]
        self.cooldown_s = cooldown_s
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.drain_timeout_s = drain_timeout_s
        self.host = host or socket.gethostname()
        self._queue: queue.Queue[Notification | None] = queue.Queue(maxsize=max(1, queue_size))
        self._last: dict[str, float] = {}
        self._healthy: dict[str, bool] = {}
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._run, name="notify", daemon=True)
        self._worker.start()

    # Sink ----------------------------------------------------------------------------------
    def on_start(self, record: EventRecord) -> None:
        key = record.event_type
        now = time.monotonic()
        if key in self._last and now - self._last[key] < self.cooldown_s:
            log.debug("notification for %s skipped (cooldown %.0f s)", key, self.cooldown_s)
            return
        self._last[key] = now
        self._put(self.event_notification(record))

    def on_update(self, record: EventRecord) -> None:
        pass

    def on_end(self, record: EventRecord) -> None:
        pass

    # Observer ------------------------------------------------------------------------------
    def on_hop(self, hop: Hop) -> None:
        pass

    def on_health(self, health: Health) -> None:
        """Notify once per change of the detector's health (the first report only if bad)."""
        if self._healthy.get(health.source, True) == health.healthy:
            return
        self._healthy[health.source] = health.healthy
        if health.healthy:
            note = Notification(f"edge-detect on {self.host}: {health.source} is back",
                                f"{health.source}: the detector is healthy again.", "default",
                                ["white_check_mark"], "health",
                                {"source": health.source, "healthy": True})
        else:
            note = Notification(f"edge-detect on {self.host}: detector unhealthy",
                                f"{health.source}: {health.problem}. Danger sounds are not "
                                f"being detected.", "high", ["warning"], "health",
                                {"source": health.source, "healthy": False,
                                 "problem": health.problem})
        self._put(note)

    # content -------------------------------------------------------------------------------
    def event_notification(self, record: EventRecord) -> Notification:
        what = _pretty(record.event_type)
        level = priority(record.event_type)
        why = ", ".join(f"{n} {p:.2f}" for n, p in record.tags)
        text = (f"{what} heard at {record.start} on {record.source} ({self.host}), "
                f"p={record.peak_probability:.2f}.")
        if why:
            text += f" Why: {why}."
        tags = ["rotating_light" if level == "urgent" else "warning", record.event_type]
        return Notification(f"{what} on {self.host}", text, level, tags, "event",
                            record.to_dict())

    # delivery ------------------------------------------------------------------------------
    def _put(self, note: Notification) -> None:
        while True:
            try:
                self._queue.put_nowait(note)
                return
            except queue.Full:
                try:
                    dropped = self._queue.get_nowait()
                except queue.Empty:
                    continue
                if dropped is not None:
                    log.warning("notification queue full: dropped %r", dropped.title)

    def _run(self) -> None:
        while True:
            note = self._queue.get()
            if note is None:
                return
            if self._closing.is_set():
                log.warning("notification %r not sent: exiting", note.title)
                continue
            for target in self.targets:
                self._deliver(target, note)

    def _deliver(self, target: Target, note: Notification) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self._post(target, note)
                return
            except urllib.error.HTTPError as exc:
                retry = exc.code >= 500 or exc.code == 429
                problem = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                retry = True
                problem = str(getattr(exc, "reason", exc))
            if not retry or attempt == self.attempts or self._closing.is_set():
                log.error("notification %r to %s failed: %s", note.title, target.url, problem)
                return
            log.info("notification to %s failed (%s); retry %d of %d", target.url, problem,
                     attempt, self.attempts - 1)
            self._closing.wait(self.backoff_s * 2 ** (attempt - 1))

    def _post(self, target: Target, note: Notification) -> None:
        if target.kind == "ntfy":
            body = note.message.encode()
            headers = {"Title": _header(note.title), "Priority": note.priority,
                       "Tags": _header(",".join(note.tags)),
                       "Content-Type": "text/plain; charset=utf-8"}
        else:
            body = json.dumps({"title": note.title, "message": note.message,
                               "priority": note.priority, "tags": note.tags, "kind": note.kind,
                               note.kind: note.data}).encode()
            headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(target.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read(1024)

    def close(self) -> None:
        """Send what is queued (up to ``drain_timeout_s``), then stop the worker."""
        try:
            self._queue.put(None, timeout=self.drain_timeout_s)
            self._worker.join(self.drain_timeout_s)
        except queue.Full:
            pass
        if self._worker.is_alive():
            self._closing.set()  # no more retries; what is still queued is logged and dropped
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._worker.join(self.timeout_s + 1)
