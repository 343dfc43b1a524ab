"""Audio sources: one file, a watched directory, raw PCM on stdin. (The microphone: mic.py.)

Every source produces :class:`Stream` objects whose blocks are float32 mono at the model rate.
"""

from __future__ import annotations

import logging
import os
import select
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edge_runtime import audio as audio_io
from edge_runtime import ffmpeg_file
from edge_runtime.ffmpeg_file import FFMPEG_SUFFIXES
from edge_runtime.text import printable
from edge_runtime.watch import AUDIO_SUFFIXES, TEMP_SUFFIXES, FolderWatcher, is_candidate

__all__ = ["AUDIO_SUFFIXES", "TEMP_SUFFIXES", "Stream", "file_stream", "is_candidate",
           "pcm_stream", "watch_directory"]

log = logging.getLogger("edge-detect")

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
    finished: bool = False  # a live source that ended for good: not to be reopened
    health_name: str = ""  # the name its supervisor reports health under ("": source)


def file_stream(path: str | os.PathLike[str], target_rate: int,
                max_seconds: float = audio_io.MAX_SECONDS,
                stop: threading.Event | None = None) -> Stream:
    """A file as a stream (libsndfile's formats; .m4a, .mp4, … through ffmpeg). Its wall-clock
    start is ``mtime - duration`` (a recorder finishing the file at mtime). Raises
    ``AudioError`` (one line) for unusable files. The stream's
    ``source`` is the path with control characters and undecodable bytes escaped."""
    path = Path(path)
    via_ffmpeg = path.suffix.lower() in FFMPEG_SUFFIXES
    if via_ffmpeg:
        probed = ffmpeg_file.probe(path, stop)
        duration = probed.duration or ffmpeg_file.measure_seconds(path, stop, max_seconds)
        if probed.streams > 1:
            log.info("%s: %d audio streams; the first is read", printable(path),
                     probed.streams)
    else:
        info = audio_io.open_info(path)
        duration = audio_io.stated_seconds(info)
        # a FLAC written through a pipe: no length in its header; one cut short (a copy, a
        # recorder that died) ends, at its mtime, before the length its header states
        if duration is None or not audio_io.ends_as_stated(path, info):
            duration = audio_io.count_seconds(path, max_seconds, info)
    try:
        mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except (OverflowError, ValueError, OSError):  # an mtime beyond year 9999 (tmpfs allows it)
        log.warning("%s: modification time out of range; timed from now", printable(path))
        mtime = datetime.now(UTC)
    decoded = audio_io.Decoded()
    blocks = (ffmpeg_file.iter_ffmpeg(path, target_rate, probed, decoded, max_seconds,
                                      stop=stop)
              if via_ffmpeg else
              audio_io.iter_file(path, target_rate, stats=decoded, max_seconds=max_seconds))
    # the whole file's length, also when only its first max_seconds are read
    return Stream(printable(path), True, mtime - timedelta(seconds=duration), blocks, decoded)


def watch_directory(directory: str | os.PathLike[str], once: bool = False,
                    settle_s: float = 1.0, poll_s: float = 0.5,
                    stop: threading.Event | None = None) -> Iterator[Path]:
    """Yield each complete audio file of ``directory`` once (see :mod:`edge_runtime.watch`);
    ``once``: stop after the files present at start."""
    watcher = FolderWatcher(directory, once=once, settle_s=settle_s, poll_s=poll_s, stop=stop)
    try:
        yield from watcher
    finally:
        watcher.close()


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


WAV_FORMATS = {(1, 8): "u8", (1, 16): "s16le", (1, 32): "s32le", (3, 32): "f32le"}
WAV_HEADER_MAX = 1 << 16  # bytes searched for the data chunk of a piped WAV


@dataclass(frozen=True)
class PipedWav:
    """What a WAV header at the start of piped PCM says (``arecord``'s and ffmpeg's default)."""

    rate: int
    channels: int
    fmt: str
    data_offset: int


def piped_wav(data: bytes) -> PipedWav | bool | None:
    """``data`` (the first bytes of a pipe) as a WAV header: :class:`PipedWav`; ``True``
    when it is a WAV whose header has not all arrived; ``None`` when it is not a WAV. Raises
    ``AudioError`` for a WAV encoding a pipe cannot carry here (24-bit, compressed)."""
    if len(data) < 12:
        return True if b"RIFF".startswith(data[:4]) and data else None
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    at, fmt = 12, None
    while at + 8 <= len(data):
        chunk, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        if chunk == b"fmt ":
            if at + 8 + 16 > len(data):
                return True
            code, channels, rate = struct.unpack_from("<HHI", data, at + 8)
            bits = struct.unpack_from("<H", data, at + 22)[0]
            if code == 0xFFFE and size >= 40 and at + 8 + 26 <= len(data):  # extensible
                code = struct.unpack_from("<H", data, at + 32)[0]
            fmt = WAV_FORMATS.get((code, bits))
            if fmt is None or channels == 0 or rate == 0:
                raise audio_io.AudioError(f"a WAV header of format {code}, {bits} bit, "
                                          f"{channels} channel(s) at {rate} Hz cannot be read "
                                          "from a pipe; send 8/16/32-bit PCM or 32-bit float")
            fmt = (rate, channels, fmt)
        elif chunk == b"data":
            if fmt is None:
                raise audio_io.AudioError("a WAV header without a fmt chunk")
            return PipedWav(fmt[0], fmt[1], fmt[2], at + 8)
        at += 8 + size + (size & 1)
    return True


def pcm_stream(handle: BinaryIO | None, rate: int, fmt: str, channels: int, target_rate: int,
               stop: threading.Event | None = None, block_s: float = 0.1,
               name: str = "stdin") -> Stream:
    """Raw interleaved PCM (e.g. ``arecord -f S16_LE -r 48000 -c 1 -t raw``) as a stream; a
    WAV header at the start (arecord's and ffmpeg's default) is read and obeyed."""
    key = fmt.lower()
    if key not in PCM_FORMATS:
        raise ValueError(f"unknown PCM format {fmt!r}; choose one of "
                         f"{', '.join(sorted(set(PCM_FORMATS)))}")
    if rate <= 0 or channels <= 0:
        raise ValueError(f"--rate and --channels must be positive (got {rate}, {channels})")
    dtype = np.dtype(PCM_FORMATS[key])
    if handle is None:
        if sys.stdin is None:  # started with stdin closed (``<&-``)
            raise ValueError(f"{name}: no standard input to read PCM from (it is closed)")
        handle = sys.stdin.buffer
    stop = stop or threading.Event()
    decoded = audio_io.Decoded(sample_rate=rate, channels=channels)

    def blocks() -> Iterator[np.ndarray]:
        first, header = b"", None
        while len(first) < WAV_HEADER_MAX:
            got = _read_available(handle, 4096, stop)
            first += got
            header = piped_wav(first)
            if not got or header is not True:
                break
        pipe_rate, pipe_channels, pipe_dtype = rate, channels, dtype
        if isinstance(header, PipedWav):
            pipe_rate, pipe_channels = header.rate, header.channels
            pipe_dtype = np.dtype(PCM_FORMATS[header.fmt])
            if (pipe_rate, pipe_channels, pipe_dtype) != (rate, channels, dtype):
                log.info("%s: a WAV header (%d Hz, %d channel(s), %s): read as it says, not "
                         "as --rate/--channels/--format", name, pipe_rate, pipe_channels,
                         header.fmt)
            first = first[header.data_offset:]
            decoded.sample_rate, decoded.channels = pipe_rate, pipe_channels
        frame = pipe_dtype.itemsize * pipe_channels
        resample = audio_io.Resampler(pipe_rate, target_rate)
        want = max(frame, int(block_s * pipe_rate) * frame)
        pending = first
        while True:
            data = _read_available(handle, want, stop)
            pending += data
            usable = len(pending) - len(pending) % frame
            if usable:
                raw = np.frombuffer(pending[:usable], dtype=pipe_dtype).reshape(-1, pipe_channels)
                pending = pending[usable:]
                mono, bad = audio_io.scrub(audio_io.to_mono(audio_io.int_to_float(raw)))
                decoded.frames_in += len(raw)
                decoded.nonfinite += bad
                if (out := resample(mono)).size:
                    yield out
            if not data:
                break
        if (tail := resample(np.zeros(0, np.float32), last=True)).size:
            yield tail

    return Stream(name, False, datetime.now(UTC), blocks(), decoded)
