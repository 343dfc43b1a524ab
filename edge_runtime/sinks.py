"""Where events go: human console lines, a JSON-lines file (fsynced per event), FLAC clips."""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edge_runtime.events import Event

log = logging.getLogger("edge-detect")


@dataclass
class StreamInfo:
    """What the sinks need to know about the stream an event came from."""

    source: str
    is_file: bool
    base_time: datetime  # wall-clock time of the stream's first sample (UTC)
    model_id: str
    sample_rate: int


def rfc3339(base: datetime, offset_s: float) -> str:
    """``base + offset`` as RFC 3339 UTC with milliseconds, e.g. ``2024-05-01T12:00:03.250Z``."""
    when = (base + timedelta(seconds=offset_s)).astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_record(event: Event, stream: StreamInfo) -> dict[str, Any]:
    """The JSON object written for one finished event."""
    record: dict[str, Any] = {
        "event": "danger",
        "start": rfc3339(stream.base_time, event.start_s),
        "end": rfc3339(stream.base_time, event.end_s),
        "duration_s": round(event.end_s - event.start_s, 3),
    }
    if stream.is_file:
        record["offset_start_s"] = round(event.start_s, 3)
        record["offset_end_s"] = round(event.end_s, 3)
    record.update({
        "peak_probability": round(float(event.peak), 4),
        "mean_probability": round(float(event.mean), 4),
        "windows": event.windows,
        "source": stream.source,
        "model_sha256": stream.model_id,
    })
    tags = event.peak_payload or []
    if tags:
        record["tags"] = [{"name": name, "probability": round(p, 4)} for name, p in tags]
    return record


def _where(event: Event, stream: StreamInfo) -> str:
    if stream.is_file:
        return f"{stream.source} +{event.start_s:.1f}s"
    return f"{stream.source} at {rfc3339(stream.base_time, event.start_s)}"


def _tag_text(event: Event) -> str:
    tags = event.peak_payload or []
    return (" [" + ", ".join(f"{n} {p:.2f}" for n, p in tags) + "]") if tags else ""


class ConsoleSink:
    """Human-readable lines through ``logging``."""

    def started(self, event: Event, stream: StreamInfo) -> None:
        log.warning("DANGER #%d started: %s p=%.2f%s", event.index, _where(event, stream),
                    event.peak, _tag_text(event))

    def finished(self, event: Event, stream: StreamInfo, record: dict[str, Any]) -> None:
        log.warning("DANGER #%d ended: %s, %.1f s, peak %.2f, mean %.2f%s", event.index,
                    _where(event, stream), event.end_s - event.start_s, event.peak, event.mean,
                    _tag_text(event))


class JsonlSink:
    """Append one JSON line per finished event; flushed and fsynced before returning."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def started(self, event: Event, stream: StreamInfo) -> None:
        pass

    def finished(self, event: Event, stream: StreamInfo, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


class AudioHistory:
    """The last ``keep_s`` seconds of a stream's audio, addressable by stream time."""

    def __init__(self, sample_rate: int, keep_s: float = 120.0) -> None:
        self.sample_rate = sample_rate
        self.keep = int(keep_s * sample_rate)
        self._blocks: deque[tuple[int, np.ndarray]] = deque()
        self._end = 0  # samples seen
        self._held = 0

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, np.float32).reshape(-1)
        if block.size == 0:
            return
        self._blocks.append((self._end, block))
        self._end += block.size
        self._held += block.size
        while self._blocks and self._held - self._blocks[0][1].size >= self.keep:
            self._held -= self._blocks.popleft()[1].size

    def get(self, start_s: float, end_s: float) -> np.ndarray:
        """Audio in ``[start_s, end_s)``, clipped to what is still held."""
        lo, hi = int(start_s * self.sample_rate), int(end_s * self.sample_rate)
        parts = [b[max(0, lo - s): max(0, hi - s)] for s, b in self._blocks
                 if s < hi and s + b.size > lo]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def reset(self) -> None:
        self._blocks.clear()
        self._end = self._held = 0


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[-60:] or "stream"


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it is durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClipSink:
    """Write each finished event's audio, with ``context_s`` either side, as FLAC (atomically)."""

    def __init__(self, directory: str | os.PathLike[str], history: AudioHistory,
                 context_s: float = 1.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.history = history
        self.context_s = context_s
        for stale in self.directory.glob(".clip.*.tmp"):  # left by a killed process
            stale.unlink(missing_ok=True)

    def started(self, event: Event, stream: StreamInfo) -> None:
        pass

    def finished(self, event: Event, stream: StreamInfo, record: dict[str, Any]) -> None:
        audio = self.history.get(max(0.0, event.start_s - self.context_s),
                                 event.end_s + self.context_s)
        if audio.size == 0:
            return
        stamp = record["start"].replace(":", "").replace("-", "")
        path = self.directory / f"{stamp}_{_safe_name(Path(stream.source).name)}.flac"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".clip.", suffix=".flac.tmp")
        os.close(fd)
        try:
            sf.write(tmp, np.clip(audio, -1.0, 1.0), stream.sample_rate, format="FLAC",
                     subtype="PCM_16")
            os.replace(tmp, path)
            fsync_dir(self.directory)  # the rename itself survives a power cut
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        record["clip"] = str(path)
        log.info("clip saved: %s", path)
