"""``edge-train place``: labelled clips placed inside longer real ambience, as a home hears them.

Alone, a ≤ 4 s clip is one short window holding nothing else. In a home the same sound arrives
somewhere in a stream: a 5 s window holds part of it and seconds of other sound. Each clip of a
labelled folder goes, at a seeded random offset, into ``seconds`` of a seeded random stretch of
a safe recording from the ambience folders; the ambience is scaled so that the clip's active
power (its loudest 20 % of 50 ms frames, :func:`training.negatives.active_power`) lies ``snr_db``
above the stretch's mean power. Out: ``audio/*.flac`` and ``labels.csv`` (the clip's label and
category, no fold; where it went, the SNR and both sources) — ``edge-train evaluate --data OUT``
reads it like any labelled folder. Seeded per clip name: the same inputs give the same files.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import atomic
from edge_runtime.audio import AudioError
from training.dataset import header_seconds, load_audio
from training.labelled import LabelledClip, csv_text, read_labelled, read_safe_audio
from training.negatives import RATE, active_power, seeded_rng, write_flac

log = logging.getLogger(__name__)

COLUMNS = ("file", "label", "category", "fold", "duration_s", "offset_s", "snr_db", "clip",
           "ambience", "ambience_start_s")
MARGIN_S = 1.0  # a clip starts at least this far from either end of its stretch


def _samples(clip: LabelledClip) -> int | None:
    """Length at 32 kHz from the file's header, else by decoding it once (None: unreadable)."""
    seconds = header_seconds(clip.path)
    if seconds is not None:
        return int(seconds * RATE)
    try:
        return load_audio(clip.path, RATE).size
    except AudioError as exc:
        log.warning("%s", exc)
        return None


def _ambiences(folders: list[Path], samples: int) -> list[tuple[LabelledClip, int]]:
    """Safe recordings at least ``samples`` long, with their lengths (decoded later, one at a
    time: hours of ambience never sit in memory together)."""
    out = []
    for folder in folders:
        for clip in read_safe_audio(folder):
            n = _samples(clip)
            if n is not None and n >= samples:
                out.append((clip, n))
    if not out:
        raise ValueError(f"{', '.join(map(str, folders))}: no safe recording is "
                         f"{samples / RATE:g} s long or longer")
    return out


def place_in_ambience(data: Path, ambience: list[Path], out: Path, *, fold: str | None = None,
                      snr_db: float = 10.0, seconds: float = 20.0, seed: int = 0
                      ) -> dict[str, Any]:
    """Write every clip of ``data`` (``fold``) placed in ambience; returns a summary."""
    start = time.perf_counter()
    samples = int(round(seconds * RATE))
    clips = read_labelled(data, fold)
    beds = _ambiences(ambience, samples)
    # each clip's generator draws its bed, stretch and offset; clips are then placed bed by bed
    rngs = [seeded_rng(seed, clip.name) for clip in clips]
    chosen = [int(rng.integers(len(beds))) for rng in rngs]
    rows: dict[int, list[str]] = {}
    skipped = 0
    for b, (bed_clip, _) in enumerate(beds):
        mine = [i for i, c in enumerate(chosen) if c == b]
        if not mine:
            continue
        try:
            bed = load_audio(bed_clip.path, RATE)
        except AudioError as exc:
            bed = np.zeros(0, np.float32)
            log.warning("%s", exc)
        if bed.size < samples:  # unreadable after all, or shorter than its header said
            skipped += len(mine)
            continue
        for i in mine:
            row = _place(clips[i], rngs[i], bed, bed_clip, samples, snr_db, out)
            if row is None:
                skipped += 1
            else:
                rows[i] = row
    if not rows:
        raise ValueError(f"{data}: no clip could be placed")
    atomic.write_text(out / "labels.csv", csv_text(COLUMNS, [rows[i] for i in sorted(rows)]))
    return {"out": str(out), "clips": len(rows), "skipped": skipped, "ambiences": len(beds),
            "seconds": round(time.perf_counter() - start, 1)}


def _place(clip: LabelledClip, rng: np.random.Generator, bed: np.ndarray,
           bed_clip: LabelledClip, samples: int, snr_db: float, out: Path
           ) -> list[str] | None:
    """Write one clip placed in a stretch of ``bed``; its labels.csv row (None: left out)."""
    try:
        sound = load_audio(clip.path, RATE)
    except AudioError as exc:
        log.warning("%s", exc)
        return None
    room = samples - sound.size - 2 * int(MARGIN_S * RATE)
    if room < 0 or active_power(sound) <= 0.0:
        log.warning("%s: %s; left out", clip.path, "silent" if room >= 0 else
                    f"{sound.size / RATE:.1f} s does not fit in {samples / RATE:g} s")
        return None
    begin = int(rng.integers(0, bed.size - samples + 1))
    stream = bed[begin:begin + samples].astype(np.float64)
    power = float(np.mean(stream ** 2))
    if power > 0.0:
        stream *= np.sqrt(active_power(sound) / 10 ** (snr_db / 10) / power)
    offset = int(MARGIN_S * RATE) + int(rng.integers(0, room + 1))
    stream[offset:offset + sound.size] += sound
    name = f"{Path(clip.name).with_suffix('').as_posix().replace('/', '__')}.flac"
    write_flac(out / "audio" / name, stream)
    return [name, clip.label, clip.category, "", f"{samples / RATE:.3f}",
            f"{offset / RATE:.6f}", f"{snr_db:g}", str(clip.path), str(bed_clip.path),
            f"{begin / RATE:.6f}"]
