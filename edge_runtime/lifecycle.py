"""What sinks receive: a typed, complete event record per lifecycle step, and live telemetry.

An event is published three ways: ``start`` as soon as the tracker confirms it, ``update`` while
it goes on (rate-limited, see ``EventConfig.update_every_s``) and ``end`` when it closes. The
record is built once per step, before any sink runs, so every sink sees the same values.

Sinks implement :class:`Sink`; those that also want every hop (the monitor, MQTT diagnostics)
implement :class:`Observer`.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from edge_runtime.events import Event

State = Literal["start", "update", "end"]
MAX_ANCHORS = 8192  # a live stream's clock corrections kept (see StreamInfo.keep_up)
# A live input whose audio falls this far behind the wall clock had a gap (a camera's stream
# paused, then went on live): what follows is timed from when it was read. Less than this is
# buffering and jitter. A stall whose audio arrives late in a burst (RTSP over TCP), or a
# detector more than this behind, is dated late by at most the delay (< --stall-timeout),
# until the burst is read: then the fast-input rule times it back.
GAP_S = 5.0


def rfc3339(base: datetime, offset_s: float) -> str:
    """``base + offset`` as RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T12:00:03.250Z``."""
    when = (base + timedelta(seconds=offset_s)).astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_id(source: str, start: str, model_id: str) -> str:
    """Stable id of one event: the same for its start, updates and end (and on a re-run)."""
    return hashlib.sha256(f"{source}\n{start}\n{model_id}".encode()).hexdigest()[:16]


@dataclass
class EventRecord:
    """One lifecycle step of one danger event (``to_dict`` is the JSON line / message)."""

    id: str
    state: State
    index: int
    start: str
    end: str
    duration_s: float
    peak_probability: float
    mean_probability: float
    windows: int
    source: str
    model_sha256: str
    class_name: str | None = None  # JSON key "class"; None when the model has no classes
    offset_start_s: float | None = None  # files only
    offset_end_s: float | None = None
    tags: list[tuple[str, float]] = field(default_factory=list)
    clip: str | None = None
    stream_start_s: float = field(default=0.0, repr=False)  # not serialised: clip cutting
    stream_end_s: float = field(default=0.0, repr=False)

    @property
    def event_type(self) -> str:
        """The class name, or ``"danger"`` for a model without classes."""
        return self.class_name or "danger"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": "danger", "id": self.id, "state": self.state}
        if self.class_name is not None:
            out["class"] = self.class_name
        out.update({"start": self.start, "end": self.end, "duration_s": self.duration_s})
        if self.offset_start_s is not None:
            out["offset_start_s"] = self.offset_start_s
            out["offset_end_s"] = self.offset_end_s
        out.update({"peak_probability": self.peak_probability,
                    "mean_probability": self.mean_probability, "windows": self.windows,
                    "source": self.source, "model_sha256": self.model_sha256})
        if self.tags:
            out["tags"] = [{"name": n, "probability": round(float(p), 4)} for n, p in self.tags]
        if self.clip is not None:
            out["clip"] = self.clip
        return out


@dataclass
class StreamInfo:
    """What the sinks need to know about the stream an event came from."""

    source: str
    is_file: bool
    base_time: datetime  # wall-clock time of the stream's first sample (UTC)
    model_id: str
    sample_rate: int
    _starts: dict[int, str] = field(default_factory=dict, repr=False)
    # where a live input's lead over the wall clock grew: (read position, lead), both seconds
    _anchors: tuple[list[float], list[float]] = field(
        default_factory=lambda: ([0.0], [0.0]), repr=False)
    _read_s: float = field(default=0.0, repr=False)  # the read position keep_up saw last

    @property
    def lead_s(self) -> float:
        """How far the input has run ahead of the wall clock (0 for real time and files;
        negative after gaps)."""
        return self._anchors[1][-1]

    def keep_up(self, offset_s: float, now: datetime | None = None) -> None:
        """A live input has been read up to ``offset_s``: none of it can be later than now.
        Audio that arrives faster than real time (a recording piped to stdin) is timed back
        by how far it had run ahead when it was read, so no time is in the future and times
        never go backwards (the lead grows at most as fast as the audio). Audio that fell
        more than :data:`GAP_S` behind (a gap in a live stream) is timed forward from where
        this read began. Files keep their own clock."""
        if self.is_file:
            return
        now = now or datetime.now(UTC)
        ahead = (self.base_time + timedelta(seconds=offset_s) - now).total_seconds()
        offsets, leads = self._anchors
        began, self._read_s = self._read_s, offset_s
        if ahead > leads[-1] + 1e-3 and offset_s > offsets[-1]:
            offsets.append(offset_s)
            leads.append(ahead)
        elif ahead < leads[-1] - GAP_S and began > offsets[-1]:  # a step where the gap was
            offsets.extend((began, began + 1e-6))
            leads.extend((leads[-1], ahead))
        else:
            return
        if len(offsets) > MAX_ANCHORS:  # bounded: the oldest half goes, its lead stays
            del offsets[:MAX_ANCHORS // 2], leads[:MAX_ANCHORS // 2]

    def lead_at(self, offset_s: float) -> float:
        """The lead that times ``offset_s``: interpolated between the read positions where it
        grew, so that time rises with the offset."""
        offsets, leads = self._anchors
        i = bisect.bisect_left(offsets, offset_s)
        if i == 0 or i == len(offsets):
            return leads[0] if i == 0 else leads[-1]
        share = (offset_s - offsets[i - 1]) / (offsets[i] - offsets[i - 1])
        return leads[i - 1] + share * (leads[i] - leads[i - 1])

    def time_at(self, offset_s: float) -> str:
        """RFC 3339 time of ``offset_s`` seconds into the stream."""
        return rfc3339(self.base_time, offset_s - self.lead_at(offset_s))

    def start_of(self, event: Event, state: State) -> str:
        """``event``'s start time, fixed when first asked (its id must not change while a fast
        input's clock moves back); forgotten at its end."""
        start = self._starts.setdefault(event.index, self.time_at(event.start_s))
        if state == "end":
            del self._starts[event.index]
        return start


def build_record(event: Event, stream: StreamInfo, state: State,
                 tags: list[tuple[str, float]] | None = None,
                 class_name: str | None = None) -> EventRecord:
    """The record of ``event`` as it stands now (``end`` is the latest end so far)."""
    start = stream.start_of(event, state)
    return EventRecord(
        id=event_id(stream.source, start, stream.model_id), state=state, index=event.index,
        start=start, end=max(start, stream.time_at(event.end_s)),
        duration_s=round(event.end_s - event.start_s, 3),
        peak_probability=round(float(event.peak), 4),
        mean_probability=round(float(event.mean), 4), windows=event.windows,
        source=stream.source, model_sha256=stream.model_id, class_name=class_name,
        offset_start_s=round(event.start_s, 3) if stream.is_file else None,
        offset_end_s=round(event.end_s, 3) if stream.is_file else None,
        tags=list(tags or []), stream_start_s=event.start_s, stream_end_s=event.end_s)


@runtime_checkable
class Sink(Protocol):
    """Receives each event's lifecycle. A sink must not block detection for long: slow I/O
    (network) belongs in the sink's own bounded worker."""

    def on_start(self, record: EventRecord) -> None: ...

    def on_update(self, record: EventRecord) -> None: ...

    def on_end(self, record: EventRecord) -> None: ...

    def close(self) -> None: ...


@dataclass
class Hop:
    """What the detector heard in one hop (one scored window)."""

    source: str
    time: str  # RFC 3339 UTC of the window's end
    offset_s: float  # the window's end, seconds into the stream
    p_danger: float  # the decision value
    p_window: float
    threshold: float
    top: list[tuple[str, float]] = field(default_factory=list)  # top classes when the model has
    level_dbfs: float = -120.0
    rtf: float = 0.0  # compute seconds per audio second, recent
    dropped_blocks: int = 0
    in_event: bool = False


@dataclass
class Health:
    """Detector health: ``healthy`` False names the ``problem`` (input dead, model failing)."""

    source: str
    healthy: bool
    problem: str = ""


@runtime_checkable
class Observer(Protocol):
    """Live telemetry: every hop, and health changes."""

    def on_hop(self, hop: Hop) -> None: ...

    def on_health(self, health: Health) -> None: ...


def model_classes(detector: Any) -> list[str]:
    """The model's danger class names, [] when it has none (looked up defensively: the class
    layer is optional in a model dir)."""
    for owner in (detector, getattr(detector, "scorer", None),
                  getattr(detector, "sessions", None)):
        for name in ("class_names", "classes"):
            value = getattr(owner, name, None)
            if value and not callable(value):
                return [str(v) for v in value]
    return []


def top_classes(score: Any, n: int = 3) -> list[tuple[str, float]]:
    """Top ``n`` (class, p) of a WindowScore's ``classes`` ({name: normalised p})."""
    scores = getattr(score, "classes", None)
    if not scores:
        return []
    items = scores.items() if isinstance(scores, dict) else scores
    try:
        pairs = [(str(k), float(v)) for k, v in items]
    except (TypeError, ValueError):
        return []
    return sorted(pairs, key=lambda kv: -kv[1])[:n]
