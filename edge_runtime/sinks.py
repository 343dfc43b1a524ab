"""Local sinks: human console lines, a JSON-lines file (start and end, fsynced), FLAC clips."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime.atomic import atomic_path, fsync_dir
from edge_runtime.lifecycle import EventRecord, StreamInfo, rfc3339
from edge_runtime.privacy import SPEECH_THRESHOLD

__all__ = ["AudioHistory", "ClipSink", "ConsoleSink", "JsonlSink", "MemorySink", "StreamInfo",
           "rfc3339"]

log = logging.getLogger("edge-detect")


def _where(record: EventRecord) -> str:
    if record.offset_start_s is not None:
        return f"{record.source} +{record.offset_start_s:.1f}s"
    return f"{record.source} at {record.start}"


def _tag_text(record: EventRecord) -> str:
    tags = record.tags
    return (" [" + ", ".join(f"{n} {p:.2f}" for n, p in tags) + "]") if tags else ""


def _what(record: EventRecord) -> str:
    return "DANGER" if record.class_name is None else f"DANGER ({record.class_name})"


class MemorySink:
    """Keeps the JSON records ``JsonlSink`` would write, in memory: each event's start and end
    line, or only the end lines with ``ends_only``."""

    def __init__(self, ends_only: bool = False) -> None:
        self.ends_only = ends_only
        self.records: list[dict] = []

    def on_start(self, record: EventRecord) -> None:
        if not self.ends_only:
            self.records.append(record.to_dict())

    def on_update(self, record: EventRecord) -> None:
        pass

    def on_end(self, record: EventRecord) -> None:
        self.records.append(record.to_dict())

    def close(self) -> None:
        pass


class ConsoleSink:
    """Human-readable lines through ``logging`` (updates at debug level)."""

    def on_start(self, record: EventRecord) -> None:
        log.warning("%s #%d started: %s p=%.2f%s", _what(record), record.index, _where(record),
                    record.peak_probability, _tag_text(record))

    def on_update(self, record: EventRecord) -> None:
        log.debug("%s #%d still going: %.1f s, peak %.2f", _what(record), record.index,
                  record.duration_s, record.peak_probability)

    def on_end(self, record: EventRecord) -> None:
        log.warning("%s #%d ended: %s, %.1f s, peak %.2f, mean %.2f%s", _what(record),
                    record.index, _where(record), record.duration_s, record.peak_probability,
                    record.mean_probability, _tag_text(record))

    def close(self) -> None:
        pass


class JsonlSink:
    """Append one JSON line per ``start`` and per ``end`` (updates are not written); each line
    is complete, flushed and fsynced before returning, so a crash loses nothing decided."""

    def __init__(self, path: str | os.PathLike[str], fresh: bool = False) -> None:
        """Open ``path`` now (created if missing; emptied in place when ``fresh``, so a link
        or ``/dev/stdout`` stays what it is): an unwritable events file stops the start in
        one line instead of losing every event later."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            device = str(self.path).startswith(("/dev/", "/proc/"))  # a shell's >> kept
            with open(self.path, "w" if fresh and not device else "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise ValueError(f"{self.path}: cannot write events ({exc.strerror or exc})") from None
        if not existed:
            fsync_dir(self.path.parent)

    def _write(self, record: EventRecord) -> None:
        line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            try:
                os.fsync(handle.fileno())
            except OSError as exc:  # /dev/null, a pipe: nothing to make durable
                if exc.errno not in (errno.EINVAL, errno.EROFS, errno.ENOTSUP):
                    raise

    def on_start(self, record: EventRecord) -> None:
        self._write(record)

    def on_update(self, record: EventRecord) -> None:
        pass

    def on_end(self, record: EventRecord) -> None:
        self._write(record)

    def close(self) -> None:
        pass


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


def clip_name(stamp: str, label: str, peak: float, source: str) -> str:
    """``<UTC start>_<class>_p<peak>_<source>.flac``: retention reads class and peak back
    (:data:`edge_runtime.retention.CLIP_NAME`)."""
    return f"{stamp}_{label}_p{min(max(peak, 0.0), 1.0):.3f}_{source}.flac"


class ClipSink:
    """Write each finished event's audio, with ``context_s`` either side, as FLAC (atomically);
    sets ``record.clip`` (run it before the sinks that publish the end)."""

    def __init__(self, directory: str | os.PathLike[str], history: AudioHistory,
                 context_s: float = 1.0,
                 speech: Callable[[np.ndarray], float] | None = None,
                 speech_threshold: float = SPEECH_THRESHOLD) -> None:
        """``speech`` (``--privacy``): audio → speech probability; a clip at or above
        ``speech_threshold`` is not kept (the event is still reported)."""
        self.speech = speech
        self.speech_threshold = speech_threshold
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.history = history
        self.context_s = context_s
        for stale in self.directory.glob(".*.tmp"):  # half-written clips left by a killed process
            stale.unlink(missing_ok=True)

    def on_start(self, record: EventRecord) -> None:
        pass

    def on_update(self, record: EventRecord) -> None:
        pass

    def close(self) -> None:
        pass

    def on_end(self, record: EventRecord) -> None:
        audio = self.history.get(max(0.0, record.stream_start_s - self.context_s),
                                 record.stream_end_s + self.context_s)
        if audio.size == 0:
            return
        if self.speech is not None:
            p = self.speech(audio)
            if p >= self.speech_threshold:
                log.info("clip not kept (--privacy): speech heard, p=%.2f — %s", p,
                         record.source)
                return
        stamp = record.start.replace(":", "").replace("-", "")
        path = self.directory / clip_name(stamp, record.event_type, record.peak_probability,
                                          _safe_name(Path(record.source).name))
        with atomic_path(path) as tmp:  # umask honoured; the rename is fsynced with its folder
            sf.write(tmp, np.clip(audio, -1.0, 1.0), self.history.sample_rate, format="FLAC",
                     subtype="PCM_16")
        record.clip = str(path)
        log.info("clip saved: %s", path)
