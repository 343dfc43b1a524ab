"""Decode and validate audio: any soundfile-readable file or array → float32 mono at the model rate.

Files are streamed in blocks (``soundfile.blocks``) and resampled with a streaming soxr
resampler, so a one-hour recording never sits in memory whole.

Non-finite samples (NaN, ±inf) are *replaced by 0* and counted; the caller logs one warning
per file. Rejecting a whole recording for a few corrupt samples would hide real events, and a
live stream cannot be rejected anyway. Problems that make a file unusable raise
:class:`AudioError` with a one-line message naming the file.

Hostile or broken files: only regular files are opened (a FIFO or a device named ``x.wav``
would block or never end); sample rates outside ``MIN_RATE..MAX_RATE`` and channel counts over
``MAX_CHANNELS`` are rejected; at most ``max_seconds`` of audio is decoded per file. Frames are
read with ``SoundFile.read`` and only the frames actually returned are used (``blocks()`` would
hand back a reused buffer's stale contents after a short read). A file that ends early or fails
mid-way keeps the audio before the problem; :attr:`Decoded.problem` says what happened.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from edge_runtime.text import printable

BLOCK_SECONDS = 10.0
BLOCK_SAMPLES = 1 << 20  # at most this many samples (all channels) per read
READ_FRAMES = 4096
MIN_RATE, MAX_RATE = 1000, 768_000
MAX_CHANNELS = 64
MAX_SECONDS = 12 * 3600.0  # default cap on audio decoded from one file


class AudioError(ValueError):
    """A file or array that cannot be used as audio; the message is one line."""


@dataclass
class Decoded:
    """Counters a decode fills in while it streams (read them after the iterator ends)."""

    frames_in: int = 0
    samples_out: int = 0
    nonfinite: int = 0
    sample_rate: int = 0
    channels: int = 0
    problem: str = ""  # set when the file ended early, failed mid-way or hit the duration cap


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "error_string", None) or str(exc)  # libsndfile's, without the path
    return printable(" ".join(text.split()) or type(exc).__name__)


def check_file(path: str | os.PathLike[str]) -> None:
    """A regular, non-empty, readable file, or a one-line :class:`AudioError` saying why not
    (a FIFO or a device named ``x.wav`` would block or never end)."""
    path = Path(path)
    name = printable(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file (or a broken link)") from None
    except OSError as exc:  # a symlink loop (ELOOP), a name too long, an I/O error
        raise AudioError(f"{name}: cannot stat ({exc.strerror or _one_line(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a pipe, socket or device"
        raise AudioError(f"{name}: not a regular file ({kind})")
    if st.st_size == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{name}: permission denied")


def open_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """``soundfile.info`` with every failure turned into a one-line :class:`AudioError`."""
    check_file(path)
    name = printable(path)
    try:
        info = sf.info(os.fsencode(path))
    except PermissionError:
        raise AudioError(f"{name}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_one_line(exc)})") from None
    if info.frames <= 0:
        raise AudioError(f"{name}: contains no audio samples (truncated or empty)")
    if not MIN_RATE <= info.samplerate <= MAX_RATE:
        raise AudioError(f"{name}: implausible sample rate {info.samplerate} Hz in the header "
                         f"(accepted {MIN_RATE}..{MAX_RATE})")
    if not 0 < info.channels <= MAX_CHANNELS:
        raise AudioError(f"{name}: implausible channel count {info.channels} in the header "
                         f"(accepted 1..{MAX_CHANNELS})")
    return info


UNKNOWN_FRAMES = 1 << 62  # libsndfile's count for a stream that did not state its length


def stated_seconds(info: sf._SoundFileInfo) -> float | None:
    """The length the header states, or None (a FLAC written through a pipe, or still being
    written, states none: libsndfile then reports 2**63 - 1 frames)."""
    if info.frames >= UNKNOWN_FRAMES or info.frames / info.samplerate > 366 * 86400:
        return None
    return float(info.duration)


def ends_as_stated(path: str | os.PathLike[str], info: sf._SoundFileInfo) -> bool:
    """Whether the last frame the header states can be read: a copy cut short or a recorder
    that died states more than the file holds (a seek, one frame read: milliseconds)."""
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            handle.seek(info.frames - 1)
            return len(handle.read(1, dtype="int16")) == 1
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        return False


def count_seconds(path: str | os.PathLike[str], max_seconds: float = MAX_SECONDS,
                  info: sf._SoundFileInfo | None = None) -> float:
    """Seconds of audio in ``path``, read through (at most ``max_seconds``); ``info``: its
    :func:`open_info`, when the caller has it."""
    info = info or open_info(path)
    frames, limit = 0, int(max_seconds * info.samplerate)
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            while frames < limit:
                got = len(handle.read(min(READ_FRAMES, limit - frames), dtype="int16",
                                      always_2d=True))
                if got == 0:
                    break
                frames += got
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError):
        pass  # what was read before the damage counts
    return frames / info.samplerate


def to_mono(block: np.ndarray) -> np.ndarray:
    """``[n]`` or ``[n, channels]`` → float32 ``[n]`` (channel mean)."""
    block = np.asarray(block)
    if block.ndim == 2:
        block = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    return np.asarray(block, dtype=np.float32).reshape(-1)


def scrub(block: np.ndarray) -> tuple[np.ndarray, int]:
    """Replace NaN/±inf by 0; returns the block and how many samples were replaced."""
    bad = ~np.isfinite(block)
    count = int(bad.sum())
    if count:
        block = np.where(bad, np.float32(0.0), block).astype(np.float32)
    return block, count


def int_to_float(array: np.ndarray) -> np.ndarray:
    """Integer PCM → float32 full scale ±1 (unsigned 8-bit is centred); floats pass through."""
    array = np.asarray(array)
    if array.dtype.kind == "u":
        half = float(np.iinfo(array.dtype).max // 2 + 1)
        return ((array.astype(np.float32) - half) / half).astype(np.float32)
    if array.dtype.kind == "i":
        return (array.astype(np.float32) / float(-np.iinfo(array.dtype).min)).astype(np.float32)
    return array.astype(np.float32, copy=False)


class Resampler:
    """Streaming mono resampler (soxr) that is a no-op when the rates already match."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self._stream = (None if self.in_rate == self.out_rate
                        else soxr.ResampleStream(self.in_rate, self.out_rate, 1,
                                                 dtype="float32", quality="HQ"))

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)


def iter_file(path: str | os.PathLike[str], target_rate: int,
              block_seconds: float = BLOCK_SECONDS,
              stats: Decoded | None = None,
              max_seconds: float = MAX_SECONDS) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at ``target_rate`` from any soundfile-readable file.

    Raises :class:`AudioError` (one line) before the first block for unusable files. A file
    that is truncated, fails mid-way or is longer than ``max_seconds`` yields the audio before
    that point and records why in ``stats.problem``.
    """
    info = open_info(path)
    name = printable(path)
    stats = stats if stats is not None else Decoded()
    stats.sample_rate, stats.channels = int(info.samplerate), int(info.channels)
    resample = Resampler(info.samplerate, target_rate)
    # Small reads: a decoder error loses at most one read's audio (FLAC loses sync, MP3 ends).
    readsize = max(256, min(READ_FRAMES, BLOCK_SAMPLES // info.channels))
    blocksize = max(readsize, int(block_seconds * info.samplerate))
    limit = int(max_seconds * info.samplerate)
    try:
        handle = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        raise AudioError(f"{name}: not a readable audio file ({_one_line(exc)})") from None
    pending: list[np.ndarray] = []
    held = 0
    with handle:
        while True:
            want = min(readsize, limit - stats.frames_in)
            if want <= 0:
                stats.problem = (f"longer than the {max_seconds:.0f} s decoded per file; "
                                 "the rest is skipped")
                break
            try:
                raw = handle.read(want, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
                if (stated_seconds(info) is None and stats.frames_in
                        and "psf_fseek" in _one_line(exc)):
                    break  # a stream of unstated length: libsndfile fails so at its end
                stats.problem = f"read failed ({_one_line(exc)})"
                break
            if len(raw) == 0:
                break
            stats.frames_in += len(raw)
            mono, bad = scrub(to_mono(raw))
            stats.nonfinite += bad
            pending.append(mono)
            held += mono.size
            if held >= blocksize:
                out = resample(np.concatenate(pending) if len(pending) > 1 else pending[0])
                pending, held = [], 0
                stats.samples_out += out.size
                if out.size:
                    yield out
    if pending:
        out = resample(np.concatenate(pending))
        stats.samples_out += out.size
        if out.size:
            yield out
    if stats.frames_in == 0:
        raise AudioError(f"{name}: contains no audio samples"
                         f"{' (' + stats.problem + ')' if stats.problem else ''}")
    if (not stats.problem and stats.frames_in < info.frames and info.format not in VBR_FORMATS
            and stated_seconds(info) is not None):
        stats.problem = f"ends early: header says {info.frames / info.samplerate:.1f} s"
    if not stats.problem and header_incomplete(Path(os.fsdecode(path)), _size(path)):
        stats.problem = "ends early: its header states a longer file"  # libsndfile clamps WAV
    if stats.problem:
        stats.problem = (f"truncated or corrupt, {stats.frames_in / info.samplerate:.1f} s "
                         f"decoded — {stats.problem}" if "longer than" not in stats.problem
                         else stats.problem)
    tail = resample(np.zeros(0, np.float32), last=True)
    stats.samples_out += tail.size
    if tail.size:
        yield tail


def header_incomplete(path: Path, size: int) -> bool:
    """A RIFF/RIFX/RF64-less WAV or AIFF header states a total size larger than the file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return False
    if len(head) < 8:
        return False
    if head[:4] == b"RIFF":
        declared = struct.unpack("<I", head[4:8])[0]
    elif head[:4] in (b"RIFX", b"FORM"):
        declared = struct.unpack(">I", head[4:8])[0]
    else:
        return False
    if declared in (0, 0xFFFFFFFF, 0x7FFFFFFF) or declared < 4:  # streaming writers: unknown
        return False
    return declared + 8 > size


def _size(path: str | os.PathLike[str]) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


# Formats whose header frame count is an estimate (compressed, no exact length in the header).
VBR_FORMATS = frozenset({"MPEG"})


def load_file(path: str | os.PathLike[str], target_rate: int) -> tuple[np.ndarray, Decoded]:
    """Whole file as float32 mono at ``target_rate`` (for clips; the daemon streams instead)."""
    stats = Decoded()
    blocks = list(iter_file(path, target_rate, stats=stats))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return audio, stats


def from_array(array: np.ndarray, sample_rate: int | None, target_rate: int) -> np.ndarray:
    """An in-memory signal (``[n]`` or ``[n, channels]``, int or float) → float32 mono.

    ``sample_rate`` None means the array is already at ``target_rate``.
    """
    array = np.asarray(array)
    if array.ndim not in (1, 2) or array.size == 0:
        raise AudioError(f"array of shape {array.shape}: expected [samples] or "
                         "[samples, channels] with at least one sample")
    if array.dtype.kind not in "iuf":
        raise AudioError(f"array of dtype {array.dtype}: expected integer or float PCM")
    if array.ndim == 2 and array.shape[1] > MAX_CHANNELS:
        raise AudioError(f"array of shape {array.shape}: more than {MAX_CHANNELS} channels; "
                         "a channel-first array wants .T ([samples, channels])")
    mono, _ = scrub(to_mono(int_to_float(array)))
    rate = int(sample_rate or target_rate)
    if rate <= 0:
        raise AudioError(f"sample_rate {sample_rate}: must be positive")
    if rate == target_rate:
        return mono
    return soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
