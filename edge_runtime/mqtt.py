"""MQTT sink with Home Assistant discovery (optional extra ``mqtt``: paho-mqtt).

``--mqtt mqtt://[user:pass@]host[:port][/prefix]`` (``mqtts://`` for TLS, ``--mqtt-ca FILE``).
Topics, with ``base = <prefix or edge-detect>/<host>``:

* ``<base>/status`` — ``online`` / ``offline`` (retained; ``offline`` is also the last will)
* ``<base>/<input>/event`` — one JSON message per lifecycle step (``event_type``, ``state``, …)
* ``<base>/class/<class>`` — ``ON`` while an event of that class goes on, then ``OFF`` (retained)
* ``<base>/last_event`` — RFC 3339 time of the last event start (retained)
* ``<base>/diagnostics`` — input level (dBFS), real-time factor, p(danger), input healthy
* ``<base>/set`` — command: ``pause``/``OFF`` and ``resume``/``ON``; ``<base>/detection`` state
* ``<discovery prefix>/<component>/<node>/<object>/config`` — Home Assistant discovery
  (retained; republished when Home Assistant announces ``online`` on ``<prefix>/status``)

Nothing decided is lost: every event-driven message is first written to an on-disk spool (one
file per message, renamed into place atomically, bounded: the oldest is dropped with a log line
when full) and removed only once the broker acknowledged it (QoS 1), in order. paho-mqtt
reconnects with backoff; messages left when the process exits are delivered by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from edge_runtime import __version__
from edge_runtime.backoff import RateLimitedLog
from edge_runtime.lifecycle import EventRecord, Health, Hop
from edge_runtime.statedir import state_dir
from edge_runtime.text import printable

log = logging.getLogger("edge-detect")

DEFAULT_PREFIX = "edge-detect"
SMOKE_WORDS = ("smoke", "co_alarm", "carbon", "fire")
SAFETY_WORDS = ("glass", "gunshot", "shot", "explosion", "scream", "siren", "alarm", "danger")


@dataclass(frozen=True)
class MqttTarget:
    """A parsed ``--mqtt`` URL."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None
    prefix: str


def _shown(url: str) -> str:
    """``url`` for a message: whatever precedes the last ``@`` (user and password) hidden."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return printable(scheme + sep + rest)


def parse_url(url: str) -> MqttTarget:
    """``mqtt[s]://[user:pass@]host[:port][/prefix]`` → :class:`MqttTarget` (ValueError names
    the problem, never the password)."""
    shown = _shown(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise ValueError(f"--mqtt {shown!r}: not a URL ({exc})") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"--mqtt {shown!r}: the scheme must be mqtt:// or mqtts://")
    if "@" in url.split("://", 1)[-1][len(parts.netloc):]:
        raise ValueError("--mqtt: an '@' after the host: a password (or user name) holding "
                         "'/', '?' or '#' is written with those percent-encoded (%2F, %3F, "
                         "%23; '@' as %40); an '@' in the topic prefix as %40")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"--mqtt {shown!r}: invalid port") from None
    if not parts.hostname:
        raise ValueError(f"--mqtt {shown!r}: no host")
    tls = parts.scheme == "mqtts"
    try:
        prefix = unquote(parts.path.strip("/"), errors="strict") or DEFAULT_PREFIX
    except UnicodeDecodeError:
        raise ValueError(f"--mqtt {shown!r}: the topic prefix is not UTF-8") from None
    if any(c in prefix for c in "+#") or not prefix.isprintable():
        raise ValueError(f"--mqtt {shown!r}: the topic prefix may not hold +, # or control "
                         "characters")
    return MqttTarget(parts.hostname, port or (8883 if tls else 1883), tls,
                      unquote(parts.username) if parts.username else None,
                      unquote(parts.password) if parts.password else None, prefix)


def slug(text: str) -> str:
    """A topic / unique_id part: lower case letters, digits and ``_``."""
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "x"


def input_slug(name: str) -> str:
    """``mic`` → ``mic``, ``-`` → ``stdin``, a path → its last part."""
    if name in ("-", "stdin"):
        return "stdin"
    return slug(Path(name.rstrip("/")).name or name)


def device_class(name: str) -> str:
    """Home Assistant binary_sensor device_class for a danger class name."""
    low = name.lower()
    if any(w in low for w in SMOKE_WORDS):
        return "smoke"
    if any(w in low for w in SAFETY_WORDS):
        return "safety"
    return "sound"


def _messages(directory: Path) -> list[Path]:
    """A spool folder's messages, oldest first."""
    return sorted(p for p in directory.glob("*.json") if p.stem.isdigit())


def _locked(path: Path, wait_s: float = 0.0) -> int | None:
    """An exclusive lock on the file ``path`` (its open descriptor; closing it releases the
    lock), or None when another process still holds it after ``wait_s`` (a process that only
    looks, :meth:`Spool.others_left`, holds one for microseconds)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)
        except BaseException:  # no locks on this file system (ENOLCK): the fd is not kept
            os.close(fd)
            raise


class Spool:
    """A bounded FIFO of messages on disk: one ``<seq>.json`` per message, written to a hidden
    temporary file and renamed into place (never half visible). One process at a time uses a
    spool (a lock file in it): two would each deliver and delete the other's messages."""

    def __init__(self, directory: str | os.PathLike[str], limit: int = 1000) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _locked(self.directory / ".lock", wait_s=2.0)
        if self._lock_fd is None:
            raise ValueError(f"MQTT spool {printable(self.directory)} is in use by another "
                             "edge-detect with the same input and --mqtt-node (give each its "
                             "own --mqtt-node)")
        self.limit = max(1, limit)
        self._lock = threading.Lock()
        for tmp in self.directory.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        last = max((int(p.stem) for p in self._files()), default=0)
        self._seq = itertools.count(last + 1)

    def _files(self) -> list[Path]:
        return _messages(self.directory)

    def __len__(self) -> int:
        return len(self._files())

    def put(self, topic: str, payload: str, retain: bool = False) -> None:
        with self._lock:
            seq = next(self._seq)
            tmp = self.directory / f".{seq:012d}.tmp"
            data = json.dumps({"topic": topic, "payload": payload, "retain": retain})
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / f"{seq:012d}.json")
            files = self._files()
            for old in files[:max(0, len(files) - self.limit)]:
                log.warning("MQTT spool full (%d messages): dropped the oldest, %s",
                            self.limit, old.name)
                old.unlink(missing_ok=True)

    def peek(self) -> tuple[Path, dict[str, Any]] | None:
        """The oldest message (an unreadable file is dropped with a log line)."""
        while True:
            files = self._files()
            if not files:
                return None
            try:
                return files[0], json.loads(files[0].read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.error("MQTT spool: dropping unreadable %s (%s)", files[0], exc)
                files[0].unlink(missing_ok=True)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the spool to the next process."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def others_left(self) -> list[tuple[Path, int]]:
        """Spools beside this one that hold messages and that no running process uses: left by
        runs with another input or node (this run does not send them: their topics are that
        input's). Each with its message count."""
        out = []
        for other in sorted(self.directory.parent.iterdir()):
            if other == self.directory or not other.is_dir():
                continue
            count = len(_messages(other))
            if not count:
                continue
            try:
                fd = _locked(other / ".lock")
            except OSError:
                continue
            if fd is not None:
                os.close(fd)
                out.append((other, count))
        return out


def node_claim(node: str, prefix: str) -> socket.socket | None:
    """This process's claim on MQTT ``node`` under ``prefix``: a bound abstract Unix socket
    (one name per machine, for every user and folder; gone when the process ends, even
    killed), or None when another process holds it."""
    name = hashlib.sha256(f"{prefix}/{node}".encode()).hexdigest()[:32]
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0edge-detect-mqtt-node-{name}")
    except OSError as exc:
        claim.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise
    return claim


def default_spool_dir() -> Path:
    """``mqtt-spool`` in the state folder (:func:`edge_runtime.statedir.state_dir`)."""
    return state_dir() / "mqtt-spool"


def tls_problem(host: str, port: int, ca_file: str | None, timeout_s: float = 5.0) -> str | None:
    """Why a TLS handshake with ``host:port`` fails (a certificate not trusted, a name that
    does not match, a port that speaks no TLS), or None: reachable and fine, or not reachable."""
    import ssl

    try:
        context = ssl.create_default_context(cafile=ca_file)
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                context.wrap_socket(sock, server_hostname=host):
            return None
    except ssl.SSLCertVerificationError as exc:
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    except ssl.SSLError as exc:
        return str(exc.reason or exc)
    except OSError:
        return None


class MqttSink:
    """Publishes the event lifecycle and diagnostics; Home Assistant discovery; pause/resume."""

    def __init__(self, url: str, *, input_name: str, classes: list[str] | None = None,
                 ca_file: str | None = None, discovery_prefix: str = "homeassistant",
                 spool_dir: str | os.PathLike[str] | None = None, spool_limit: int = 1000,
                 off_delay_s: float | None = 60.0, diagnostics_every_s: float = 5.0,
                 on_command: Callable[[bool], None] | None = None,
                 node: str | None = None, drain_timeout_s: float = 10.0,
                 input_names: list[str] | None = None) -> None:
        """``input_names``: the sources' names when several share this sink (their health
        reports are ``NAME`` or ``NAME:…``); one input: every report is about it."""
        try:
            import paho.mqtt.client as paho
        except ImportError:
            raise ValueError("--mqtt needs paho-mqtt: pip install 'edge-detect[mqtt]'") from None
        self.target = parse_url(url)
        self._matches = paho.topic_matches_sub  # (subscription, topic) → bool
        self._no_connection = paho.MQTT_ERR_NO_CONN  # a publish made as the connection went
        self.ca_file = ca_file
        if ca_file is not None and not self.target.tls:
            raise ValueError(f"--mqtt-ca {ca_file}: only used with TLS; write the broker URL "
                             "as mqtts://")
        if ca_file is not None and not Path(ca_file).is_file():
            raise ValueError(f"--mqtt-ca {ca_file}: no such file")
        self.hostname = socket.gethostname()
        self.node = slug(node or self.hostname)
        self.source = input_slug(input_name)
        self.base = f"{self.target.prefix}/{self.node}"
        self.discovery_prefix = discovery_prefix.strip("/")
        self.classes = [str(c) for c in classes or []]
        # one binary_sensor per class, and "danger": on during any event
        self.binary_classes = [*self.classes, *([] if "danger" in self.classes else ["danger"])]
        self.event_types = self.classes + (["danger"] if "danger" not in self.classes else [])
        self.off_delay_s = off_delay_s
        self.diagnostics_every_s = diagnostics_every_s
        self.on_command = on_command
        self.drain_timeout_s = drain_timeout_s
        self.paused = False
        self._last_event = ""  # the latest event start published (RFC 3339 sorts as text)
        # class state topic → ids of the events holding it ON (several inputs share a class)
        self._open: dict[str, set[str]] = {}
        self._input_ok: dict[str, bool] = {}  # health report source → healthy (listening)
        self.input_names = list(input_names or [])
        self._listening_sent = ""
        self._connections = 0  # accepted connections so far
        self._resend_states = False  # set by a reconnection, done by the delivery thread
        # _input_ok, _listening_sent: changed by the source threads, read by paho's (no disk
        # under it); _open and the order of the class states written: sink and delivery threads
        self._state = threading.Lock()
        self._classes = threading.Lock()
        self._diag: dict[str, Any] = {"healthy": True, "problem": ""}
        self._diag_sent = 0.0
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._failed_once = False
        self._refused = ""  # the broker's last refusal, logged once
        self._draining = False

        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=f"edge-detect-{self.node}-{self.source}")
        client.suppress_exceptions = True  # a callback's error is logged; paho's thread lives on
        paho_log = logging.getLogger("edge-detect.paho")
        paho_log.setLevel(logging.WARNING)
        if not paho_log.filters:  # its callback errors only ("not connected" while it retries:
            paho_log.addFilter(lambda record: str(record.msg).startswith("Caught exception"))
        client.enable_logger(paho_log)
        if self.target.username:
            client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            try:
                client.tls_set(ca_certs=ca_file)
            except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
                raise ValueError(f"--mqtt-ca {ca_file}: not a usable CA certificate file "
                                 f"({exc.strerror or exc})") from None
        root = Path(spool_dir or default_spool_dir())
        root.mkdir(parents=True, exist_ok=True)
        # one process per node on this machine, whatever its user or spool folder: its class
        # sensors, status, availability and event entities are the node's
        self._node_lock = node_claim(self.node, self.target.prefix)
        if self._node_lock is None:
            raise ValueError(f"another edge-detect on this machine publishes to MQTT as node "
                             f"{self.node!r} (its class sensors, status and availability "
                             "would be shared): give each process its own --mqtt-node")
        self.client = client
        self.spool: Spool | None = None
        try:
            self._start(root, spool_limit)
        except BaseException:
            self._release()
            raise

    def _start(self, root: Path, spool_limit: int) -> None:
        """The spool, paho's loop and the delivery thread (``__init__``'s second half)."""
        client = self.client
        self.spool = Spool(root / f"{self.node}_{self.source}", spool_limit)
        earlier = len(self.spool)
        # no event is open at start: a run killed mid-event left its classes ON (retained),
        # which every Home Assistant restart would read as a live alarm
        for cls in self.binary_classes:
            self.spool.put(self.topic("class", slug(cls)), "OFF", retain=True)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.connect_async(self.target.host, self.target.port, keepalive=30)
        client.loop_start()
        self._worker = threading.Thread(target=self._deliver, name="mqtt-spool", daemon=True)
        self._worker.start()
        if earlier:
            log.info("MQTT: %d message(s) left by an earlier run will be delivered", earlier)
        for other, count in self.spool.others_left():
            log.warning("MQTT: %d message(s) left by an earlier run with another input or "
                        "--mqtt-node wait in %s; that run, started again, sends them (delete "
                        "the folder if that input is gone)", count, printable(other))

    # topics -----------------------------------------------------------------------------
    def topic(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    @property
    def event_topic(self) -> str:
        return self.topic(self.source, "event")

    # connection -------------------------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            if str(reason) != self._refused:  # once per reason, not at every retry
                self._refused = str(reason)
                log.warning("MQTT %s:%d refused the connection: %s (retrying; events wait "
                            "in %s)", self.target.host, self.target.port, reason,
                            self.spool.directory)
            return
        self._refused = ""
        log.info("MQTT connected to %s:%d (topics under %s)", self.target.host,
                 self.target.port, self.base)
        self._failed_once = False
        client.subscribe([(f"{self.discovery_prefix}/status", 1), (self.topic("set"), 1),
                          (self._class_config_topic("+"), 1),
                          (self._event_config_topic("+"), 1)])
        self.publish_discovery()
        client.publish(self.topic("detection"), "OFF" if self.paused else "ON", qos=1,
                       retain=True)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        self._connected.set()
        self._send_listening(force=True)
        # a broker restarted without persistence lost the retained class states: queued (by
        # the delivery thread: no disk here) after what is spooled, so the last word is the
        # state now; the first connection sends those queued at start
        self._resend_states = self._resend_states or self._connections > 0
        self._connections += 1
        self._wake.set()

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any = None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected and not self._closing.is_set() and not self._failed_once:
            self._failed_once = True
            log.warning("MQTT %s:%d closed the connection before accepting it (%s): a TLS "
                        "port reached with mqtt://? Events wait in %s", self.target.host,
                        self.target.port, reason, self.spool.directory)
        if was_connected and not self._closing.is_set():
            log.warning("MQTT connection to %s:%d lost (%s); reconnecting with backoff",
                        self.target.host, self.target.port, reason)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        if not self._failed_once:
            self._failed_once = True
            problem = (tls_problem(self.target.host, self.target.port, self.ca_file)
                       if self.target.tls else None)
            if problem:
                log.warning("MQTT broker %s:%d: TLS failed (%s); check --mqtt-ca and the "
                            "broker's certificate; events wait in %s", self.target.host,
                            self.target.port, problem, self.spool.directory)
                return
            log.warning("MQTT broker %s:%d unreachable; events wait in %s until it is back",
                        self.target.host, self.target.port, self.spool.directory)

    def _class_config_topic(self, obj: str) -> str:
        return f"{self.discovery_prefix}/binary_sensor/{self.node}/{obj}/config"

    def _event_config_topic(self, obj: str) -> str:
        return f"{self.discovery_prefix}/event/{self.node}/{obj}/config"

    def _forget_stale_input(self, topic: str, payload: bytes) -> None:
        """A retained event entity of this node for an input this run does not serve (renamed,
        or served alone before): deleted, so automations do not point at a dead entity (one
        process per node: no other run serves it)."""
        if not payload or topic in self.discovery():
            return
        log.info("MQTT: removing the Home Assistant event entity %r, an input this run does "
                 "not serve", topic.split("/")[-2])
        self.client.publish(topic, "", qos=1, retain=True)

    def _forget_stale(self, topic: str, payload: bytes) -> None:
        """A retained binary sensor of this node that :meth:`discovery` no longer has (a
        class removed from the mapping): its config and state are cleared, so Home Assistant
        drops the entity instead of keeping it forever."""
        if not payload or topic in self.discovery():
            return
        obj = topic.split("/")[-2]
        log.info("MQTT: removing the Home Assistant entity of class %r, which this model "
                 "does not have", obj)
        self.client.publish(topic, "", qos=1, retain=True)
        self.client.publish(self.topic("class", obj), "", qos=1, retain=True)

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        if self._matches(self._class_config_topic("+"), msg.topic):
            self._forget_stale(msg.topic, msg.payload)
            return
        if self._matches(self._event_config_topic("+"), msg.topic):
            self._forget_stale_input(msg.topic, msg.payload)
            return
        payload = msg.payload.decode("utf-8", "replace").strip()
        if msg.topic == f"{self.discovery_prefix}/status":
            if payload == "online":
                log.info("Home Assistant is online: republishing discovery")
                self.publish_discovery()
                self._send_listening(force=True)
            return
        command = payload.lower()
        if command in ("pause", "off"):
            self._set_paused(True)
        elif command in ("resume", "on"):
            self._set_paused(False)
        else:
            log.warning("MQTT %s: unknown command %r (pause|resume|ON|OFF)", msg.topic,
                        payload[:40])

    def _set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.on_command is not None:
            self.on_command(paused)
        self.client.publish(self.topic("detection"), "OFF" if paused else "ON", qos=1,
                            retain=True)

    # discovery --------------------------------------------------------------------------
    def device(self) -> dict[str, Any]:
        return {"identifiers": [f"edge_detect_{self.node}"], "name": f"edge-detect {self.node}",
                "manufacturer": "edge-detect", "model": "danger-sound detector",
                "sw_version": __version__}

    def discovery(self) -> dict[str, dict[str, Any]]:
        """``{config topic: payload}`` of every entity of this host."""
        common = {"device": self.device(),
                  "origin": {"name": "edge-detect", "sw_version": __version__}}
        online = {"availability_topic": self.topic("status")}
        # what reports sounds is unavailable, not "off", while no input can be heard (a camera
        # rebooting, a microphone gone): HA must not show "no smoke" from a deaf detector
        hearing = {"availability": [{"topic": self.topic("status")},
                                    {"topic": self.topic("listening")}],
                   "availability_mode": "all"}
        node, disc, out = self.node, self.discovery_prefix, {}

        def add(component: str, obj: str, payload: dict[str, Any]) -> None:
            payload = {**({} if "availability" in payload else online), **payload,
                       "unique_id": f"edge_detect_{node}_{obj}", **common}
            out[f"{disc}/{component}/{node}/{obj}/config"] = payload

        add("event", f"{self.source}_sound", {
            "name": f"Danger sound {self.source}", "state_topic": self.event_topic,
            "event_types": self.event_types, "qos": 1, "icon": "mdi:ear-hearing", **hearing})
        for cls in self.binary_classes:
            add("binary_sensor", slug(cls), {
                "name": cls.replace("_", " ").capitalize(),
                "state_topic": self.topic("class", slug(cls)),
                "device_class": device_class(cls), "qos": 1, **hearing,
                # a safety net for a lost OFF, never shorter than the updates that renew ON
                **({} if self.off_delay_s is None else {"off_delay": int(self.off_delay_s)})})
        diag = {"state_topic": self.topic("diagnostics"), "entity_category": "diagnostic"}
        add("sensor", "last_event", {"name": "Last event", "state_topic": self.topic("last_event"),
                                     "device_class": "timestamp",
                                     "entity_category": "diagnostic"})
        add("sensor", "input_level", {**diag, "name": "Input level", "unit_of_measurement": "dBFS",
                                      "state_class": "measurement",
                                      "value_template": "{{ value_json.level_dbfs }}"})
        add("sensor", "realtime_factor", {**diag, "name": "Real-time factor",
                                          "state_class": "measurement",
                                          "value_template": "{{ value_json.rtf }}"})
        add("sensor", "p_danger", {**diag, "name": "p(danger)", "state_class": "measurement",
                                   "value_template": "{{ value_json.p_danger }}"})
        add("binary_sensor", "input_healthy", {
            **diag, "name": "Input healthy", "device_class": "running",
            "value_template": "{{ 'ON' if value_json.healthy else 'OFF' }}"})
        add("switch", "detection", {"name": "Detection", "command_topic": self.topic("set"),
                                    "state_topic": self.topic("detection"), "qos": 1,
                                    "icon": "mdi:ear-hearing"})
        return out

    def publish_discovery(self) -> None:
        for topic, payload in self.discovery().items():
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)

    # lifecycle (Sink) -------------------------------------------------------------------
    def message(self, record: EventRecord) -> dict[str, Any]:
        """The event message (also the event entity's attributes in Home Assistant)."""
        out = {"event_type": record.event_type, "state": record.state, "id": record.id,
               "source": record.source, "start": record.start, "end": record.end,
               "duration_s": record.duration_s, "score": record.peak_probability,
               "mean": record.mean_probability,
               "tags": [{"name": n, "probability": round(float(p), 4)} for n, p in record.tags],
               "model_sha256": record.model_sha256}
        if record.clip:
            out["clip"] = record.clip
        return out

    def _queue(self, topic: str, payload: str, retain: bool = False) -> None:
        self.spool.put(topic, payload, retain)
        self._wake.set()

    def _class_topics(self, record: EventRecord) -> list[str]:
        """The binary_sensor states an event drives: its class's (if known) and ``danger``."""
        names = {record.class_name or "danger", "danger"}
        return [self.topic("class", slug(c)) for c in self.binary_classes if c in names]

    def _queue_each(self, messages: list[tuple[str, str, bool]]) -> None:
        """Queue each message; one that cannot be written (a full disk) does not keep the
        others from trying; the first failure is raised after them (the runner logs it)."""
        failure: OSError | None = None
        for topic, payload, retain in messages:
            try:
                self._queue(topic, payload, retain)
            except OSError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _queue_states(self) -> None:
        """Every class state as it is now (after a reconnection)."""
        with self._classes:
            self._queue_each([(topic, "ON" if self._open.get(topic) else "OFF", True)
                              for topic in self._class_state_topics()])

    def _class_state_topics(self) -> list[str]:
        return [self.topic("class", slug(c)) for c in self.binary_classes]

    def on_start(self, record: EventRecord) -> None:
        self.on_update(record)
        if record.start > self._last_event:  # files read out of order: never backwards
            self._last_event = record.start
            self._queue(self.topic("last_event"), record.start, retain=True)

    def on_update(self, record: EventRecord) -> None:
        with self._classes:
            topics = self._class_topics(record)
            for topic in topics:
                self._open.setdefault(topic, set()).add(record.id)
            self._queue_each([(self.event_topic, json.dumps(self.message(record)), False),
                              *[(topic, "ON", True) for topic in topics]])

    def on_end(self, record: EventRecord) -> None:
        """OFF once no event of the class is open (another input's may still be)."""
        with self._classes:
            cleared = []
            for topic in self._class_topics(record):  # first: a failed write cannot keep it
                holding = self._open.get(topic, set())
                holding.discard(record.id)
                if not holding:
                    cleared.append(topic)
            self._queue_each([(self.event_topic, json.dumps(self.message(record)), False),
                              *[(topic, "OFF", True) for topic in cleared]])

    # telemetry (Observer) ---------------------------------------------------------------
    def on_hop(self, hop: Hop) -> None:
        self._diag.update(level_dbfs=hop.level_dbfs, rtf=hop.rtf, p_danger=hop.p_danger,
                          dropped_blocks=hop.dropped_blocks)
        if time.monotonic() - self._diag_sent >= self.diagnostics_every_s:
            self._send_diagnostics()

    def _input_of(self, source: str) -> str:
        return source.split(":", 1)[0] if len(self.input_names) > 1 else ""

    def on_health(self, health: Health) -> None:
        with self._state:
            if health.healthy:  # heard again: whatever said it was not (a stream reopened)
                for key in [k for k in self._input_ok
                            if self._input_of(k) == self._input_of(health.source)]:
                    del self._input_ok[key]
            self._input_ok[health.source] = health.healthy
            deaf = sorted(self._deaf())
        self._send_listening()
        # with several inputs, "Input healthy" is off while any is deaf and names them (the
        # sound entities stay available while one is heard: it can still raise an alarm)
        problem = health.problem if len(self.input_names) <= 1 else (
            f"not heard: {', '.join(deaf)}" if deaf else "")
        self._diag.update(healthy=health.healthy if len(self.input_names) <= 1 else not deaf,
                          problem=problem)
        self._send_diagnostics()

    def _deaf(self) -> set[str]:
        """Inputs some report says are not heard (a supervised stream reconnecting, a flat
        microphone, a failing model); ``_state`` held by the caller."""
        return {self._input_of(source) for source, ok in self._input_ok.items() if not ok}

    def _hears(self) -> bool:
        """Whether some input can be heard; ``_state`` held by the caller."""
        return len(self._deaf()) < max(1, len(self.input_names))

    def _send_listening(self, force: bool = False) -> None:
        """``<base>/listening`` (retained): ``online`` while some input is heard, else
        ``offline`` — the sound entities' second availability topic."""
        with self._state:  # computed and sent in one step: never an older state last
            state = "online" if self._hears() else "offline"
            if self._connected.is_set() and (force or state != self._listening_sent):
                self._listening_sent = state
                self.client.publish(self.topic("listening"), state, qos=1, retain=True)

    def _send_diagnostics(self) -> None:
        self._diag_sent = time.monotonic()
        if self._connected.is_set():
            self.client.publish(self.topic("diagnostics"), json.dumps(self._diag), qos=0)

    # delivery ---------------------------------------------------------------------------
    def _deliver(self) -> None:
        """Oldest spooled message first; removed once the broker acknowledged it."""
        errors = RateLimitedLog()
        while not self._stopped():
            self._wake.wait(0.5)
            self._wake.clear()
            try:  # whatever goes wrong, this thread lives on: it alone delivers
                self._deliver_spooled()
                errors.ok("MQTT delivery works again")
            except Exception as exc:
                errors.error("MQTT delivery: %s: %s (retrying)", type(exc).__name__, exc)
                time.sleep(0.5)

    def _deliver_spooled(self) -> None:
        """One pass: the class states a reconnection asked for, then what is spooled."""
        if self._resend_states and self._connected.is_set():
            self._resend_states = False
            self._queue_states()
        while self._connected.is_set() and not self._stopped():
            item = self.spool.peek()
            if item is None:
                return
            path, msg = item
            info = self.client.publish(msg["topic"], msg["payload"], qos=1,
                                       retain=bool(msg.get("retain")))
            if info.rc == self._no_connection:
                return  # the connection went between the check and the publish: kept
            # paho keeps an unacknowledged QoS 1 message and resends it after a reconnect
            while not info.is_published() and not self._stopped():
                time.sleep(0.05)
            if not info.is_published():
                return
            self.spool.remove(path)

    def _stopped(self) -> bool:
        return self._closing.is_set() and not self._draining

    def close(self) -> None:
        """Deliver what is spooled (up to ``drain_timeout_s``), publish ``offline``, disconnect."""
        deadline = time.monotonic() + self.drain_timeout_s
        self._draining = True
        self._closing.set()
        self._wake.set()
        while len(self.spool) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._draining = False
        self._wake.set()
        self._worker.join(2.0)
        left = len(self.spool)
        if left:
            log.warning("MQTT: %d message(s) not delivered yet; kept in %s for the next run",
                        left, self.spool.directory)
        if self._connected.is_set():
            info = self.client.publish(self.topic("status"), "offline", qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
        self.client.disconnect()
        self._release()

    def _release(self) -> None:
        """Stop paho's loop and let go of the spool and node locks (idempotent)."""
        try:
            self.client.loop_stop()
            if self.spool is not None:
                self.spool.close()
        finally:
            if self._node_lock is not None:
                self._node_lock.close()
                self._node_lock = None
