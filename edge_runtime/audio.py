"""Decode and validate audio: any soundfile-readable file or array → float32 mono at the model rate.

Files are streamed in blocks (``soundfile.blocks``) and resampled with a streaming soxr
resampler, so a one-hour recording never sits in memory whole.

Non-finite samples (NaN, ±inf) are *replaced by 0* and counted; the caller logs one warning
per file. Rejecting a whole recording for a few corrupt samples would hide real events, and a
live stream cannot be rejected anyway. Problems that make a file unusable raise
:class:`AudioError` with a one-line message naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

BLOCK_SECONDS = 10.0


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def open_info(path: str | os.PathLike[str]) -> sf._SoundFileInfo:
    """``soundfile.info`` with every failure turned into a one-line :class:`AudioError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file (or a broken link)") from None
    except OSError as exc:
        raise AudioError(f"{path}: cannot stat ({_one_line(exc)})") from None
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    try:
        info = sf.info(str(path))
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({_one_line(exc)})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: contains no audio samples (truncated or empty)")
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"{path}: invalid header (rate {info.samplerate}, "
                         f"{info.channels} channels)")
    return info


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
              stats: Decoded | None = None) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at ``target_rate`` from any soundfile-readable file.

    Raises :class:`AudioError` (one line) before the first block for unusable files, or
    mid-stream if the file turns out to be truncated or corrupt.
    """
    info = open_info(path)
    stats = stats if stats is not None else Decoded()
    stats.sample_rate, stats.channels = int(info.samplerate), int(info.channels)
    resample = Resampler(info.samplerate, target_rate)
    blocksize = max(1024, int(block_seconds * info.samplerate))
    try:
        with sf.SoundFile(str(path)) as handle:
            for raw in handle.blocks(blocksize=blocksize, dtype="float32", always_2d=True):
                stats.frames_in += len(raw)
                mono, bad = scrub(to_mono(raw))
                stats.nonfinite += bad
                out = resample(mono)
                stats.samples_out += out.size
                if out.size:
                    yield out
        tail = resample(np.zeros(0, np.float32), last=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as exc:
        at = stats.frames_in / max(1, info.samplerate)
        raise AudioError(f"{path}: truncated or corrupt, read failed after {at:.1f} s "
                         f"({_one_line(exc)})") from None
    stats.samples_out += tail.size
    if tail.size:
        yield tail
    if stats.frames_in == 0:
        raise AudioError(f"{path}: contains no audio samples (truncated or empty)")


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
    mono, _ = scrub(to_mono(int_to_float(array)))
    rate = int(sample_rate or target_rate)
    if rate <= 0:
        raise AudioError(f"sample_rate {sample_rate}: must be positive")
    if rate == target_rate:
        return mono
    return soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
