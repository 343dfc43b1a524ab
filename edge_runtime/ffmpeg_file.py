"""Files libsndfile cannot read — phone and camera recordings (.m4a, .mp4, .aac, .webm, …) —
decoded by ffmpeg (the same ffmpeg that reads network streams), streamed in blocks.

``ffprobe`` states the length and checks for an audio stream first (one :class:`AudioError`
line when there is none, or when ffmpeg is not installed); ``ffmpeg`` then writes float32 mono
at the model rate through a pipe. Files are passed as ``file:`` URLs, so no name is taken for a
protocol or an option. A decode that fails mid-way, or stalls, keeps the audio before it and
says why in :attr:`~edge_runtime.audio.Decoded.problem`, like a truncated WAV or FLAC.
"""

from __future__ import annotations

import collections
import json
import os
import re
import select
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.audio import (
    BLOCK_SECONDS,
    MAX_SECONDS,
    AudioError,
    Decoded,
    check_file,
    iter_file,
    scrub,
)
from edge_runtime.text import printable

FFMPEG_SUFFIXES = frozenset({".m4a", ".m4b", ".mp4", ".aac", ".webm", ".mka", ".mkv", ".mov",
                             ".wma", ".amr", ".3gp"})
PROBE_TIMEOUT_S = 30.0
STALL_S = 60.0  # no decoded audio for this long: the decode is given up


@dataclass(frozen=True)
class Probe:
    """What ffprobe says of a file's first audio stream."""

    duration: float  # seconds (0.0 when the container does not say)
    sample_rate: int
    channels: int
    streams: int = 1  # audio streams in the file (the first is read)


def _tool(name: str, path: Path) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise AudioError(f"{printable(path)}: {path.suffix} files are decoded by ffmpeg, which "
                         "is not installed (apt-get install ffmpeg)")
    return exe


def probe(path: str | os.PathLike[str], stop: threading.Event | None = None) -> Probe:
    """The file's audio stream, or a one-line :class:`AudioError` (:class:`Interrupted` when
    ``stop`` came first)."""
    path = Path(path)
    check_file(path)
    name = printable(path)
    cmd = [_tool("ffprobe", path), "-v", "error", "-select_streams", "a", "-show_entries",
           "stream=sample_rate,channels,duration:format=duration", "-of", "json",
           "file:" + os.fsdecode(path.resolve())]
    outcome = _Outcome(tail=collections.deque(maxlen=20))
    out = b"".join(_pipe(cmd, path, 1 << 16, stop, outcome, stall_s=PROBE_TIMEOUT_S,
                         tool="ffprobe"))
    if outcome.stopped:
        raise Interrupted(f"{name}: stopped while ffprobe read it")
    if outcome.stalled:
        raise AudioError(f"{name}: ffprobe found no answer in {PROBE_TIMEOUT_S:.0f} s")
    why = "; ".join(outcome.tail)[-200:]
    try:
        info = json.loads(out or b"{}")
    except ValueError:
        info = {}
    streams = info.get("streams") or []
    if outcome.returncode != 0 or not streams:
        why = printable(why) or "ffprobe found no audio stream"
        raise AudioError(f"{name}: not a readable audio file ({why})")
    try:
        rate, channels = int(streams[0]["sample_rate"]), int(streams[0]["channels"])
    except (KeyError, TypeError, ValueError):
        raise AudioError(f"{name}: ffprobe states no sample rate / channels") from None
    try:  # the audio stream's own length (a video track may run longer), else the file's
        duration = max(0.0, float(streams[0].get("duration")
                                  or (info.get("format") or {}).get("duration") or 0.0))
    except (TypeError, ValueError):
        duration = 0.0
    return Probe(duration, rate, channels, len(streams))


_CONTEXT = re.compile(r"\[[^\]]* @ 0x[0-9a-fA-F]+\] ")  # "[mov,mp4,... @ 0x5652a1] "


def without_context(line: str) -> str:
    """An ffmpeg message on one line, without its component's address ("[tcp @ 0x…] ")."""
    return _CONTEXT.sub("", " ".join(line.split()))


def _tidy(line: str, path: Path) -> str:
    """One ffmpeg message without its demuxer address and the file's own URL."""
    text = without_context(line)
    return printable(text.replace("file:" + os.fsdecode(path.resolve()) + ": ", ""))


def drain_lines(pipe: Any, tail: collections.deque, clean: Callable[[str], str]) -> None:
    """Keep the last lines (``tail`` is bounded) a process writes to ``pipe``, each passed
    through ``clean`` (no addresses, no passwords), until it closes."""
    for raw in iter(pipe.readline, b""):
        text = clean(raw.decode("utf-8", "replace").strip())
        if text:
            tail.append(text)
    pipe.close()


class Interrupted(AudioError):
    """A stop came while the file was being probed: not the file's fault."""


@dataclass
class _Outcome:
    """How one ffmpeg run ended."""

    returncode: int = 0
    stalled: bool = False
    stopped: bool = False  # the caller's stop event: not the file's fault
    tail: collections.deque = field(default_factory=lambda: collections.deque(maxlen=3))


def _pipe(cmd: list[str], path: Path, want: int, stop: threading.Event | None,
          outcome: _Outcome, stall_s: float = STALL_S, tool: str = "ffmpeg") -> Iterator[bytes]:
    """Run ``cmd``; yield its stdout in pieces of about ``want`` bytes. Waits in 0.5 s steps
    (``stop`` ends it at once), gives up after ``stall_s`` without output; the process is
    killed and reaped, whatever happens."""
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        why = exc.strerror or exc
        raise AudioError(f"{printable(path)}: cannot start {tool} ({why})") from None
    drainer = threading.Thread(target=drain_lines,
                               args=(proc.stderr, outcome.tail, lambda t: _tidy(t, path)),
                               daemon=True, name=f"{tool}-stderr {printable(path)}")
    drainer.start()
    fd = proc.stdout.fileno()
    pending, waited = b"", 0.0
    try:
        while True:
            if stop is not None and stop.is_set():
                outcome.stopped = True
                break
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                waited += 0.5
                if waited >= stall_s:
                    outcome.stalled = True
                    break
                continue
            waited = 0.0
            data = os.read(fd, want - len(pending))
            if not data:
                break
            pending += data
            if len(pending) >= want:
                yield pending
                pending = b""
        if pending:
            yield pending
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        drainer.join(timeout=2)
        outcome.returncode = proc.returncode


def _decode_cmd(path: Path, rate: int, sample_format: str, max_seconds: float) -> list[str]:
    """ffmpeg decoding the first audio stream of ``path`` to mono raw ``sample_format`` at
    ``rate`` on stdout, at most ``max_seconds``."""
    return [_tool("ffmpeg", path), "-nostdin", "-hide_banner", "-loglevel", "error",
            "-i", "file:" + os.fsdecode(path.resolve()), "-t", f"{max_seconds:.3f}",
            "-map", "0:a:0", "-ac", "1", "-ar", str(rate), "-f", sample_format, "pipe:1"]


def measure_seconds(path: str | os.PathLike[str], stop: threading.Event | None = None,
                    max_seconds: float = MAX_SECONDS) -> float:
    """The length of a file whose container does not state it (a WebM from a browser's
    MediaRecorder, piped ffmpeg output): decoded at 8 kHz and counted — the audio that will
    be read, whatever its timestamps say (a camera stream saved across a dropout jumps)."""
    path = Path(path)
    cmd = _decode_cmd(path, 8000, "u8", max_seconds)
    return sum(len(piece) for piece in _pipe(cmd, path, 1 << 20, stop, _Outcome())) / 8000.0


def iter_ffmpeg(path: str | os.PathLike[str], target_rate: int, info: Probe,
                stats: Decoded | None = None, max_seconds: float = MAX_SECONDS,
                block_seconds: float = BLOCK_SECONDS,
                stop: threading.Event | None = None) -> Iterator[np.ndarray]:
    """float32 mono blocks at ``target_rate`` of ``path`` (probed as ``info``); ``stop``
    ends the decode at once, quietly."""
    path = Path(path)
    name = printable(path)
    stats = stats if stats is not None else Decoded()
    stats.sample_rate, stats.channels = info.sample_rate, info.channels  # the file's own
    cmd = _decode_cmd(path, target_rate, "f32le", max_seconds)
    outcome = _Outcome()
    leftover = b""
    for piece in _pipe(cmd, path, max(4, int(block_seconds * target_rate) * 4), stop, outcome):
        block, leftover = floats_from(leftover + piece, stats)
        if block.size:
            yield block
    if outcome.stopped:
        return
    decoded_s = stats.samples_out / target_rate
    signalled = (f"ffmpeg was stopped by signal {-outcome.returncode}"
                 if outcome.returncode < 0 else "")
    if stats.samples_out == 0:
        why = signalled or "; ".join(outcome.tail) or "ffmpeg decoded nothing"
        raise AudioError(f"{name}: contains no audio samples ({why})")
    if outcome.stalled:
        stats.problem = f"decoding stalled for {STALL_S:.0f} s"
    elif outcome.returncode != 0:  # ffmpeg's own complaints on success: frames concealed
        stats.problem = signalled or ("decoding failed (" + ("; ".join(outcome.tail)
                                                             or f"exit {outcome.returncode}")
                                      + ")")
    elif info.duration > max_seconds:
        stats.problem = (f"longer than the {max_seconds:.0f} s decoded per file; the rest is "
                         "skipped")
    elif info.duration and decoded_s < info.duration - 1.0:
        stats.problem = f"ends early: the container says {info.duration:.1f} s"
    if stats.problem and "longer than" not in stats.problem:
        stats.problem = f"truncated or corrupt, {decoded_s:.1f} s decoded — {stats.problem}"


def floats_from(data: bytes, stats: Decoded) -> tuple[np.ndarray, bytes]:
    """Whole little-endian float32 samples of ``data`` (scrubbed, counted in ``stats``) and
    the bytes left over (a sample split between two reads of a pipe)."""
    usable = len(data) - len(data) % 4
    block, bad = scrub(np.frombuffer(data[:usable], dtype="<f4").astype(np.float32))
    stats.frames_in += block.size
    stats.samples_out += block.size
    stats.nonfinite += bad
    return block, data[usable:]


def iter_audio(path: str | os.PathLike[str], target_rate: int, stats: Decoded | None = None,
               max_seconds: float = MAX_SECONDS) -> Iterator[np.ndarray]:
    """Any audio file as float32 mono blocks at ``target_rate``: libsndfile's formats
    directly, :data:`FFMPEG_SUFFIXES` through ffmpeg."""
    if Path(path).suffix.lower() in FFMPEG_SUFFIXES:
        return iter_ffmpeg(path, target_rate, probe(path), stats, max_seconds)
    return iter_file(path, target_rate, stats=stats, max_seconds=max_seconds)
