"""Every ``edge-detect`` option, declared once: name, type, default, range and help.

The click command (:mod:`edge_runtime.cli`) and the TOML config (:mod:`edge_runtime.config`)
are both derived from :data:`OPTIONS`, so a default, a range or a help text lives in one place
and a value is checked the same way wherever it comes from — before any model is loaded. Event
rule defaults come from :class:`edge_runtime.events.EventConfig`, the detector's threshold
fallback is :data:`THRESHOLD_FALLBACK`.

Values from the command line arrive as text and are converted; values from TOML must already
have the right type (``"false"`` is not a boolean, ``"0.6"`` is not a number).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.events import EventConfig
from edge_runtime.providers import CHOICES as PROVIDERS
from edge_runtime.providers import MAX_THREADS

THRESHOLD_FALLBACK = 0.5  # when neither --threshold nor the manifest gives one
PCM_FORMATS = ("s16le", "s32le", "f32le", "u8", "s8")
_ID = re.compile(r"[0-9a-fA-F]{64}\Z")


class OptionError(ValueError):
    """An option value of the wrong type or out of range (one line naming the option)."""


@dataclass(frozen=True)
class Option:
    """One option. ``lo``/``hi`` bound numbers (``open_lo``/``open_hi``: exclusive);
    ``check`` returns a problem (or None) for values that need more than a range."""

    name: str
    kind: type
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    short: str | None = None
    in_config: bool = True
    check: Callable[[Any], str | None] | None = None
    default_text: str | None = None  # shown in --help instead of the default value
    multiple: bool = False  # repeatable on the command line; a value or a list in TOML

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_flag(self) -> bool:
        return self.kind is bool

    def range_text(self) -> str:
        left = "(" if self.open_lo else "["
        right = ")" if self.open_hi else "]"
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{left}{lo}, {hi}{right}"

    def parse_config(self, value: Any) -> Any:
        """A TOML value: typed as declared (a value or a list of them when ``multiple``)."""
        if self.multiple:
            items = value if isinstance(value, list) else [value]
            return tuple(self.parse(item) for item in items)
        return self.parse(value)

    def parse(self, value: Any, *, text: bool = False) -> Any:
        """The typed, checked value. ``text``: ``value`` is command-line text to convert."""
        if value is None:
            return None
        value = self._typed(value, text)
        if self.choices is not None and value.lower() not in self.choices:
            raise OptionError(f"must be one of {', '.join(self.choices)}, got {value!r}")
        if self.kind in (int, float):
            lo_ok = self.lo is None or (value > self.lo if self.open_lo else value >= self.lo)
            hi_ok = self.hi is None or (value < self.hi if self.open_hi else value <= self.hi)
            if not (math.isfinite(value) and lo_ok and hi_ok):
                kind = "an integer" if self.kind is int else "a finite number"
                raise OptionError(f"must be {kind} in {self.range_text()}, got {value!r}")
        if self.check is not None and (problem := self.check(value)):
            raise OptionError(problem)
        return value.lower() if self.choices is not None else value

    def _typed(self, value: Any, text: bool) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            raise OptionError(f"must be true or false, got {_describe(value)}")
        if self.kind in (int, float):
            noun = "an integer" if self.kind is int else "a number"
            if text and isinstance(value, str):
                try:
                    return self.kind(value.strip())
                except ValueError:
                    raise OptionError(f"must be {noun}, got {value!r}") from None
            accepted = int if self.kind is int else int | float
            if isinstance(value, accepted) and not isinstance(value, bool):
                return self.kind(value)
            raise OptionError(f"must be {noun}, got {_describe(value)}")
        if isinstance(value, str):
            if "\0" in value or len(value) > 4096:
                raise OptionError("must be a plain string (no NUL, at most 4096 characters)")
            return value
        raise OptionError(f"must be a string, got {_describe(value)}")


def _describe(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a table"}
    kind = names.get(type(value), type(value).__name__)
    return f"{kind} {value!r}" if len(repr(value)) <= 40 else kind


def _model_id(value: str) -> str | None:
    return None if _ID.match(value) else "must be a model id of 64 hex digits"


def _not_a_dir(value: str) -> str | None:
    return f"{value} is a directory, not a file" if Path(value).is_dir() else None


def _topic_part(value: str) -> str | None:
    """An MQTT topic level: no wildcard, not empty."""
    if not value.strip("/"):
        return "must not be empty"
    if any(c in value for c in "+#\0"):
        return f"{value!r}: MQTT topics cannot hold '+', '#' or NUL"
    return None


def _mqtt_url(value: str) -> str | None:
    """A broker URL that parses (checked before any model loads; paho is not needed)."""
    from edge_runtime.mqtt import parse_url

    try:
        parse_url(value)
    except ValueError as exc:
        return str(exc).removeprefix("--mqtt ").removeprefix("--mqtt: ")
    return None


def _node_name(value: str) -> str | None:
    if not any(c.isalnum() for c in value):
        return f"{value!r}: needs a letter or digit"
    return None


def _dir_or_new(value: str) -> str | None:
    path = Path(value)
    if path.exists() and not path.is_dir():
        return f"{value} exists and is not a directory"
    return None


_EV = EventConfig()

OPTIONS: tuple[Option, ...] = (
    Option("input", str, (), "Microphone, a directory to watch, one audio file, raw PCM "
           "on stdin, or a stream URL (rtsp://, http(s)://, anything ffmpeg reads). Repeat with "
           "NAME=SPEC for several named sources in one process (TOML: a string or a list; "
           "[sources.NAME] tables too). With --spark: one DIR or URI (hdfs://, s3a://, ...).",
           metavar="[NAME=]mic|DIR|FILE|-|URL", multiple=True,
           default_text="mic, unless [sources] tables name the inputs"),
    Option("model", str, "models_onnx", "Model dir (manifest.json + ONNX files, each "
           "sha256-verified).", metavar="DIR"),
    Option("expect_model", str, None, "Refuse any model dir whose id (64 hex digits, logged at "
           "start and written in each event as model_sha256) is not ID.", metavar="ID",
           check=_model_id),
    Option("device", str, None, "Input device: index or name substring."),
    Option("list_devices", bool, False, "List input devices and exit.", in_config=False),
    Option("once", bool, False, "DIR: process the existing files, then exit."),
    Option("settle", float, 1.0, "DIR: seconds a new file's size/mtime must be stable before "
           "it is read (a file is read once; see DEPLOY.md).", lo=0.0, hi=3600.0),
    Option("watch_state", str, None, "DIR: where each watched folder's record of the files it "
           "read is kept, so a restart does not read them again (their events would repeat).",
           metavar="DIR", check=_dir_or_new,
           default_text="$STATE_DIRECTORY/watched under systemd, else "
           "$XDG_STATE_HOME/edge-detect/watched"),
    Option("max_file_duration", float, 43200.0, "Files: seconds of audio decoded at most per "
           "file; the rest is skipped.", lo=0.0, hi=7 * 86400.0, open_lo=True),
    Option("stall_timeout", float, 10.0, "mic/URL: no audio for this many seconds → reopen the "
           "device/stream.", lo=0.0, hi=3600.0, open_lo=True),
    Option("flat_timeout", float, 60.0, "mic/URL: a flat (dead) signal for this many seconds → "
           "reopen; 0: never.", lo=0.0, hi=86400.0),
    Option("reopen_timeout", float, 300.0, "mic/URL: cannot reopen within this many seconds → "
           "exit 3 (for a restart).", lo=0.0, hi=86400.0, open_lo=True),
    Option("rate", int, 48000, "stdin: sample rate of the raw PCM.", lo=8000, hi=384000),
    Option("format", str, "s16le", "stdin: sample format (arecord -f S16_LE → s16le).",
           choices=PCM_FORMATS),
    Option("channels", int, 1, "stdin: interleaved channels (mixed to mono).", lo=1, hi=64),
    Option("threshold", float, None, "Danger threshold.", lo=0.0, hi=1.0, open_lo=True,
           open_hi=True, default_text=f"the manifest's, else {THRESHOLD_FALLBACK}"),
    Option("hysteresis", float, _EV.hysteresis, "An event stays open down to threshold - "
           "hysteresis.", lo=0.0, hi=1.0, open_hi=True),
    Option("min_duration", float, _EV.min_duration_s, "Seconds above threshold before an "
           "event counts.", lo=0.0, hi=3600.0),
    Option("cooldown", float, _EV.cooldown_s, "Quiet seconds that end an event; danger again "
           "sooner continues it.", lo=0.0, hi=3600.0),
    Option("update_every", float, 10.0, "Seconds between 'update' messages while an event goes "
           "on (0: none).", lo=0.0, hi=3600.0),
    Option("window_only", bool, False, "Decide on 5 s windows only (as training's fold CV). "
           "Default: the model's choice — binary models also score each 1 s chunk so short "
           "sounds are not diluted; class models decide on windows."),
    Option("events", str, None, "Append a JSON line when an event starts and when it ends "
           "(fsynced); with --once the file is started afresh, so a batch run can be repeated.",
           metavar="FILE.jsonl", check=_not_a_dir),
    Option("privacy", bool, False, "--save-clips: keep no clip in which speech is heard (the "
           "AudioSet head decides); the event is still reported."),
    Option("save_clips", str, None, "Write each event's audio (±1 s context) as FLAC.",
           metavar="DIR", check=_dir_or_new),
    Option("clips_max_mb", float, None, "Keep the clip folder under this many MB (oldest clips "
           "removed first).", lo=0.0, hi=1e7, open_lo=True),
    Option("clips_keep_days", float, None, "Remove clips older than this many days.", lo=0.0,
           hi=36500.0, open_lo=True),
    Option("clips_keep_best", int, 0, "Retention spares the N clips of each class with the "
           "highest peak.", lo=0, hi=10000),
    Option("mqtt", str, None, "Publish events to MQTT with Home Assistant discovery: "
           "mqtt[s]://[user:pass@]host[:port][/prefix] (extra: edge-detect[mqtt]).",
           metavar="URL", check=_mqtt_url),
    Option("mqtt_ca", str, None, "mqtts: CA certificate file.", metavar="FILE"),
    Option("mqtt_discovery_prefix", str, "homeassistant", "Home Assistant discovery topic "
           "prefix.", check=_topic_part),
    Option("mqtt_node", str, None, "This detector's name in MQTT topics, client id and Home "
           "Assistant (give each detector of a host its own).", check=_node_name,
           default_text="the host name"),
    Option("mqtt_spool", str, None, "MQTT messages wait here while the broker is unreachable.",
           metavar="DIR", check=_dir_or_new,
           default_text="$STATE_DIRECTORY/mqtt-spool under systemd, else "
           "$XDG_STATE_HOME/edge-detect/mqtt-spool"),
    Option("notify", str, (), "Push a notification per event: an ntfy topic URL or a webhook "
           "(JSON POST); repeatable (TOML: a string or a list).", metavar="URL", multiple=True),
    Option("notify_cooldown", float, 300.0, "Seconds between two notifications of the same "
           "class.", lo=0.0, hi=86400.0),
    Option("monitor", bool, False, "Serve what it hears on 127.0.0.1: /metrics (Prometheus), "
           "/live (JSON), /."),
    Option("monitor_port", int, 8765, "Port of --monitor.", lo=1, hi=65535),
    Option("provider", str, "auto", "onnxruntime execution provider; auto falls back to CPU.",
           choices=tuple(PROVIDERS)),
    Option("threads", int, None, "onnxruntime intra-op threads.", lo=1, hi=MAX_THREADS,
           default_text="onnxruntime's choice"),
    Option("config", str, None, "TOML file with any of these options; the command line "
           "overrides it.", metavar="FILE", in_config=False),
    Option("write_systemd_unit", str, None, "Write a systemd unit running edge-detect with the "
           "other options; exit.", metavar="PATH", in_config=False),
    Option("print_systemd_unit", bool, False, "Print that unit instead; exit.",
           in_config=False),
    Option("spark", str, None, "Run DIR_OR_URI on Apache Spark (local[N], spark://HOST:PORT, "
           "yarn, k8s://URL): --once scores it once, else streams new files; needs the 'spark' "
           "extra and Java 17.", metavar="MASTER"),
    Option("spark_checkpoint", str, None, "--spark streaming: checkpoint dir.", metavar="DIR",
           check=_dir_or_new, default_text="beside --events"),
    Option("service_user", str, "edge-detect", "The unit's User= (a dedicated, unprivileged "
           "account).", metavar="USER"),
    Option("verbose", bool, False, "Debug logging.", short="-v"),
    Option("quiet", bool, False, "Only warnings, errors and events.", short="-q"),
)

BY_NAME = {o.name: o for o in OPTIONS}


def _check_declarations() -> None:
    """Fail at import if a declaration contradicts itself (a default outside its range)."""
    for option in OPTIONS:
        if option.multiple:
            assert isinstance(option.default, tuple), f"{option.name}: default must be a tuple"
            for value in option.default:
                option.parse(value)
        elif option.default is not None:
            option.parse(option.default)
    assert len(BY_NAME) == len(OPTIONS), "an option is declared twice"


_check_declarations()


def defaults() -> dict[str, Any]:
    return {o.name: o.default for o in OPTIONS}


def check_together(values: dict[str, Any]) -> None:
    """Checks that involve two options (after the config file and the command line merged)."""
    threshold, hysteresis = values.get("threshold"), values.get("hysteresis")
    if threshold is not None and hysteresis is not None and hysteresis >= threshold:
        raise OptionError(f"--hysteresis {hysteresis:g} must be smaller than --threshold "
                          f"{threshold:g} (an event would never end)")
    if values.get("verbose") and values.get("quiet"):
        raise OptionError("--verbose and --quiet exclude each other")
