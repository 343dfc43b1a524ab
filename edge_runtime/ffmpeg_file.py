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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


def _tool(name: str, path: Path) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise AudioError(f"{printable(path)}: {path.suffix} files are decoded by ffmpeg, which "
                         "is not installed (apt-get install ffmpeg)")
    return exe


def probe(path: str | os.PathLike[str]) -> Probe:
    """The file's audio stream, or a one-line :class:`AudioError`."""
    path = Path(path)
    check_file(path)
    name = printable(path)
    cmd = [_tool("ffprobe", path), "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels:format=duration", "-of", "json",
           "file:" + os.fsdecode(path.resolve())]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise AudioError(f"{name}: ffprobe found no answer in {PROBE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise AudioError(f"{name}: cannot start ffprobe ({exc.strerror or exc})") from None
    why = "; ".join(_tidy(line, path) for line in
                    done.stderr.decode("utf-8", "replace").splitlines() if line.strip())[-200:]
    try:
        info = json.loads(done.stdout or b"{}")
    except ValueError:
        info = {}
    streams = info.get("streams") or []
    if done.returncode != 0 or not streams:
        why = printable(why) or "ffprobe found no audio stream"
        raise AudioError(f"{name}: not a readable audio file ({why})")
    try:
        rate, channels = int(streams[0]["sample_rate"]), int(streams[0]["channels"])
    except (KeyError, TypeError, ValueError):
        raise AudioError(f"{name}: ffprobe states no sample rate / channels") from None
    try:
        duration = max(0.0, float((info.get("format") or {}).get("duration") or 0.0))
    except ValueError:
        duration = 0.0
    return Probe(duration, rate, channels)


_CONTEXT = re.compile(r"\[[^\]]* @ 0x[0-9a-fA-F]+\] ")  # "[mov,mp4,... @ 0x5652a1] "


def _tidy(line: str, path: Path) -> str:
    """One ffmpeg message without its demuxer address and the file's own URL."""
    text = _CONTEXT.sub("", " ".join(line.split()))
    return printable(text.replace("file:" + os.fsdecode(path.resolve()) + ": ", ""))


def _drain(pipe, tail: collections.deque, path: Path) -> None:
    """Keep ffmpeg's last few stderr lines (bounded) until it closes."""
    for raw in iter(pipe.readline, b""):
        text = _tidy(raw.decode("utf-8", "replace"), path)
        if text:
            tail.append(text)
    pipe.close()


def iter_ffmpeg(path: str | os.PathLike[str], target_rate: int, info: Probe,
                stats: Decoded | None = None, max_seconds: float = MAX_SECONDS,
                block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """float32 mono blocks at ``target_rate`` of ``path`` (probed as ``info``)."""
    path = Path(path)
    name = printable(path)
    stats = stats if stats is not None else Decoded()
    stats.sample_rate, stats.channels = target_rate, 1
    cmd = [_tool("ffmpeg", path), "-nostdin", "-hide_banner", "-loglevel", "error",
           "-i", "file:" + os.fsdecode(path.resolve()), "-t", f"{max_seconds:.3f}",
           "-map", "0:a:0", "-ac", "1", "-ar", str(target_rate), "-f", "f32le",
           "-acodec", "pcm_f32le", "pipe:1"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise AudioError(f"{name}: cannot start ffmpeg ({exc.strerror or exc})") from None
    tail: collections.deque[str] = collections.deque(maxlen=3)
    drainer = threading.Thread(target=_drain, args=(proc.stderr, tail, path), daemon=True,
                               name=f"ffmpeg-stderr {name}")
    drainer.start()
    fd = proc.stdout.fileno()
    want = max(4, int(block_seconds * target_rate) * 4)
    pending, leftover, stalled = b"", b"", False
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], STALL_S)
            if not ready:
                stalled = True
                break
            data = os.read(fd, want - len(pending))
            if not data:
                break
            pending += data
            if len(pending) >= want:
                block, leftover = _floats(leftover + pending, stats)
                pending = b""
                yield block
        if pending or leftover:
            block, _ = _floats(leftover + pending, stats)
            if block.size:
                yield block
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        drainer.join(timeout=2)
    decoded_s = stats.samples_out / target_rate
    if stats.samples_out == 0:
        why = "; ".join(tail) or "ffmpeg decoded nothing"
        raise AudioError(f"{name}: contains no audio samples ({why})")
    if stalled:
        stats.problem = f"decoding stalled for {STALL_S:.0f} s"
    elif proc.returncode != 0 or tail:
        stats.problem = "decoding failed (" + ("; ".join(tail) or f"exit {proc.returncode}") + ")"
    elif info.duration > max_seconds:
        stats.problem = (f"longer than the {max_seconds:.0f} s decoded per file; the rest is "
                         "skipped")
    elif info.duration and decoded_s < info.duration - 1.0:
        stats.problem = f"ends early: the container says {info.duration:.1f} s"
    if stats.problem and "longer than" not in stats.problem:
        stats.problem = f"truncated or corrupt, {decoded_s:.1f} s decoded — {stats.problem}"


def _floats(data: bytes, stats: Decoded) -> tuple[np.ndarray, bytes]:
    """Whole float32 samples of ``data`` (scrubbed, counted) and the bytes left over."""
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
