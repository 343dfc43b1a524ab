"""Audio sources: one file, a watched directory, raw PCM on stdin. (The microphone: mic.py.)

Every source produces :class:`Stream` objects whose blocks are float32 mono at the model rate.
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge_runtime import audio as audio_io

log = logging.getLogger("edge-detect")

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                            ".au", ".caf", ".w64", ".rf64"})
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", "~")

PCM_FORMATS = {  # --format name → numpy dtype (little-endian)
    "s16le": "<i2", "s32le": "<i4", "f32le": "<f4", "u8": "u1", "s8": "i1",
    "s16_le": "<i2", "s32_le": "<i4", "float_le": "<f4", "float32_le": "<f4",
}


@dataclass
class Stream:
    """One audio stream: where it comes from, when its first sample was, and its blocks."""

    source: str
    is_file: bool
    base_time: datetime
    blocks: Iterator[np.ndarray]
    decoded: audio_io.Decoded = field(default_factory=audio_io.Decoded)


def file_stream(path: str | os.PathLike[str], target_rate: int) -> Stream:
    """A file as a stream. Its wall-clock start is ``mtime - duration`` (a recorder finishing
    the file at mtime). Raises ``AudioError`` (one line) for unusable files."""
    path = Path(path)
    info = audio_io.open_info(path)
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    decoded = audio_io.Decoded()
    blocks = audio_io.iter_file(path, target_rate, stats=decoded)
    return Stream(str(path), True, mtime - timedelta(seconds=info.duration), blocks, decoded)


def is_candidate(path: Path) -> bool:
    """An audio-looking name that is not hidden and not a temporary/partial download."""
    name = path.name
    return (not name.startswith(".") and not name.endswith(TEMP_SUFFIXES)
            and path.suffix.lower() in AUDIO_SUFFIXES)


def watch_directory(directory: str | os.PathLike[str], once: bool = False,
                    settle_s: float = 1.0, poll_s: float = 0.5,
                    stop: threading.Event | None = None) -> Iterator[Path]:
    """Yield existing audio files (sorted), then new ones as they appear.

    A file is yielded only after its size and mtime have stayed unchanged for ``settle_s``
    (so a file still being written is never read half). A file rewritten later (new size or
    mtime) is yielded again. ``once``: stop after the files present at start.
    """
    directory = Path(directory)
    stop = stop or threading.Event()
    done: dict[Path, tuple[int, int]] = {}
    seen: dict[Path, tuple[tuple[int, int], float]] = {}  # signature → first time seen
    initial: set[Path] | None = None
    while not stop.is_set():
        now = time.monotonic()
        try:
            names = sorted(p for p in directory.iterdir() if is_candidate(p))
        except OSError as exc:
            log.error("%s: cannot list directory (%s)", directory, exc)
            names = []
        if initial is None:
            initial = set(names)
        for path in names:
            try:
                st = path.stat()
                sig = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                sig = (-1, -1)  # broken link: report it once like any bad file
            except OSError:
                continue
            if done.get(path) == sig:
                continue
            first = seen.get(path)
            if first is None or first[0] != sig:
                seen[path] = (sig, now)
                first = seen[path]
            age = time.time() - sig[1] / 1e9 if sig[1] > 0 else settle_s
            if now - first[1] >= settle_s or age >= settle_s:
                done[path] = sig
                seen.pop(path, None)
                yield path
        if once and initial is not None and all(p in done for p in initial if p.exists()
                                                or p.is_symlink()):
            return
        stop.wait(poll_s)


def _read_available(handle: BinaryIO, size: int, stop: threading.Event) -> bytes:
    """Read up to ``size`` bytes, waking every 0.2 s to honour ``stop``; b'' at end of input."""
    fd = handle.fileno()
    while not stop.is_set():
        try:
            ready, _, _ = select.select([fd], [], [], 0.2)
        except (OSError, ValueError):
            ready = [fd]
        if ready:
            return os.read(fd, size)
    return b""


def pcm_stream(handle: BinaryIO | None, rate: int, fmt: str, channels: int, target_rate: int,
               stop: threading.Event | None = None, block_s: float = 0.1,
               name: str = "stdin") -> Stream:
    """Raw interleaved PCM (e.g. ``arecord -f S16_LE -r 48000 -c 1``) as a stream."""
    key = fmt.lower()
    if key not in PCM_FORMATS:
        raise ValueError(f"unknown PCM format {fmt!r}; choose one of "
                         f"{', '.join(sorted(set(PCM_FORMATS)))}")
    if rate <= 0 or channels <= 0:
        raise ValueError(f"--rate and --channels must be positive (got {rate}, {channels})")
    dtype = np.dtype(PCM_FORMATS[key])
    frame_bytes = dtype.itemsize * channels
    handle = handle or sys.stdin.buffer
    stop = stop or threading.Event()
    decoded = audio_io.Decoded(sample_rate=rate, channels=channels)

    def blocks() -> Iterator[np.ndarray]:
        resample = audio_io.Resampler(rate, target_rate)
        want = max(frame_bytes, int(block_s * rate) * frame_bytes)
        leftover = b""
        while True:
            data = _read_available(handle, want, stop)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % frame_bytes
            leftover = data[usable:]
            if not usable:
                continue
            raw = np.frombuffer(data[:usable], dtype=dtype).reshape(-1, channels)
            mono, bad = audio_io.scrub(audio_io.to_mono(audio_io.int_to_float(raw)))
            decoded.frames_in += len(raw)
            decoded.nonfinite += bad
            if (out := resample(mono)).size:
                yield out
        if (tail := resample(np.zeros(0, np.float32), last=True)).size:
            yield tail

    return Stream(name, False, datetime.now(UTC), blocks(), decoded)
