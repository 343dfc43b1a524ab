"""Broad negatives and mixing augmentation, written as audio files the embedding cache can key.

Negatives (all labelled safe; synthetic stand-ins, said so in reports): digital silence, white
and pink noise from −70 to −30 dBFS, tones, sweeps and chords (numpy), plucked-string "music"
(Karplus-Strong, numpy), and speech from ``espeak-ng`` in several voices and languages (skipped
with one warning when espeak-ng is absent).

Mixes: each danger training clip inside a safe background at a random SNR (0–15 dB, the danger
sound's loud frames against the background's mean), labelled with the danger clip's class; a clip
shorter than a device window sits at a random offset inside a window of background, as a stream's
window holds it (held-out UrbanSound8K fold 3: safe false alarms 4.9 % → 2.4 %; fold 1: danger
recall 0.819 → 0.833, against mixes only as long as the clip). A
mix's background comes from the same ESC-50 fold or from clips outside the ESC-50 folds, and the
mix records both recordings, so fold CV leaves it out whenever either one is held out.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime import loudness
from edge_runtime.atomic import atomic_path
from training.dataset import Clip, load_audio

log = logging.getLogger(__name__)

RATE = 32_000
LEVELS_DBFS = (-70, -60, -50, -40, -30)
SPEECH = (
    ("en", "Good morning, the meeting has moved to three o'clock, please bring the report."),
    ("en-us", "Could you pass me the salt? Dinner is almost ready, so wash your hands."),
    ("de", "Heute ist das Wetter schön, wir gehen am Nachmittag in den Park spazieren."),
    ("fr", "Bonjour, je voudrais un café et deux croissants, s'il vous plaît, merci."),
    ("es", "El tren sale a las nueve y media, no olvides comprar los billetes hoy."),
    ("en-gb", "Remember to water the plants and feed the cat before you leave tonight."),
)
VOICES = (("150", "50"), ("120", "80"), ("175", "30"))
SNR_DB = (0.0, 15.0)
# A danger sound's level for the SNR: the mean power of its loudest 20 % of 50 ms frames
# (edge_runtime.loudness). The whole-clip mean buried short sounds (a 0.3 s gunshot in a 4 s clip
# at "10 dB" was a background with a faint click, labelled gunshot: held-out safe recordings
# then scored as danger).


@contextmanager
def flac_writer(path: Path) -> Iterator[Callable[[np.ndarray], None]]:
    """Yield ``write(block)`` appending mono 32 kHz blocks (clipped to ±1) to a 24-bit FLAC that
    appears at ``path`` only once complete (edge_runtime.atomic), so memory stays one block."""
    with atomic_path(path) as tmp, sf.SoundFile(tmp, "w", RATE, 1, format="FLAC",
                                                subtype="PCM_24") as out:
        yield lambda block: out.write(np.clip(block, -1.0, 1.0).astype(np.float32))


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write ``audio`` (clipped to ±1) atomically as a 24-bit FLAC at 32 kHz."""
    with flac_writer(path) as write:
        write(audio)


def speak(path: Path, voice: str, text: str, speed: int | str, pitch: int | str) -> bool:
    """Render ``text`` with espeak-ng into the wav ``path`` (renamed into place when done);
    False when espeak-ng failed."""
    tmp = path.with_name(f".{path.stem}.tmp.wav")
    done = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w",
                           str(tmp), text], capture_output=True, timeout=60, check=False)
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(path)
    return True


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of ``white`` (standard normal) or ``pink`` (unit RMS) noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(np.fft.rfftfreq(n)[1:])
    pink = np.fft.irfft(spectrum, n)
    return pink / np.sqrt(np.mean(pink * pink))


def _pluck(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong plucked string."""
    period = max(2, int(RATE / freq))
    buf = rng.uniform(-1, 1, period)
    out = np.empty(int(seconds * RATE))
    for i in range(out.size):
        out[i] = buf[i % period]
        buf[i % period] = 0.996 * 0.5 * (buf[i % period] + buf[(i + 1) % period])
    return out


def seeded_rng(seed: int, name: str) -> np.random.Generator:
    """A generator of its own per (seed, name): the same draws whatever else is made."""
    return np.random.default_rng([seed, int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)])


def music(rng: np.random.Generator) -> np.ndarray:
    """About 7 s of plucked-string "music": six bars of three random notes, peak 0.5."""
    notes = (130.8, 164.8, 196.0, 220.0, 146.8, 174.6, 246.9, 261.6, 329.6, 392.0)
    bars = [sum(_pluck(f, 1.2, rng) for f in rng.choice(notes, 3, replace=False))
            for _ in range(6)]
    out = np.concatenate(bars)
    return 0.5 * out / max(1e-9, float(np.abs(out).max()))


def synthetic_sounds() -> dict[str, Callable[[np.random.Generator], np.ndarray]]:
    """name → maker (given its own seeded generator) of the numpy-made negatives."""
    t8 = np.arange(8 * RATE) / RATE
    out: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
        "silence": lambda rng: np.zeros(10 * RATE)}
    for level in LEVELS_DBFS:
        for kind in ("white", "pink"):
            out[f"{kind}_{-level}dbfs"] = (lambda rng, k=kind, lv=level:
                                           noise(k, 8 * RATE, rng) * 10 ** (lv / 20))
    for freq in (220, 440, 1000, 3000):
        out[f"sine_{freq}"] = lambda rng, f=freq: 0.4 * np.sin(2 * np.pi * f * t8)
    out["square_220"] = lambda rng: 0.2 * np.sign(np.sin(2 * np.pi * 220 * t8))
    out["sweep_100_8k"] = lambda rng: 0.4 * np.sin(2 * np.pi * (100 * t8 + 7900 / 16 * t8 ** 2))
    out["chord_c_major"] = lambda rng: sum(0.15 * np.sin(2 * np.pi * f * t8)
                                           for f in (261.6, 329.6, 392.0))
    for k in range(4):
        out[f"music_{k}"] = music
    return out


def espeak_speech(folder: Path) -> dict[str, Path]:
    """name → wav path of espeak-ng sentences ({} with one warning without espeak-ng)."""
    if shutil.which("espeak-ng") is None:
        log.warning("espeak-ng not found (apt-get install espeak-ng): no synthetic speech "
                    "negatives")
        return {}
    out = {}
    for i, (voice, text) in enumerate(SPEECH):
        for j, (speed, pitch) in enumerate(VOICES):
            path = folder / f"speech_{i}_{j}.wav"
            if not path.is_file() and not speak(path, voice, text, speed, pitch):
                log.warning("espeak-ng failed for voice %s; skipped", voice)
                continue
            out[path.stem] = path
    return out


def negative_clips(folder: Path, seed: int = 0) -> list[Clip]:
    """Write (once) and list the synthetic negatives under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for name, make in synthetic_sounds().items():
        path = folder / f"{name}.flac"
        if not path.is_file():
            write_flac(path, make(seeded_rng(seed, name)))
        clips.append(Clip(f"synthetic/{name}", path, 0, f"synthetic_{name.split('_')[0]}", 0,
                          None, "synthetic"))
    for name, path in espeak_speech(folder).items():
        clips.append(Clip(f"synthetic/{name}", path, 0, "synthetic_speech", 0, None,
                          "synthetic"))
    return clips


def mix_clips(danger: list[Clip], backgrounds: list[Clip], folder: Path, per_clip: int = 1,
              seed: int = 0, min_samples: int = 0) -> list[Clip]:
    """``per_clip`` mixes of each danger clip into a safe background, at least ``min_samples``
    long (a shorter clip sits at a random offset inside that much background, as in a stream's
    window). Written once each; the file name keys the danger clip, the background, the SNR and
    the length, so a changed pool makes new files instead of reusing stale ones."""
    if per_clip <= 0 or not backgrounds:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for clip in danger:
        pool = [b for b in backgrounds if b.fold in (0, clip.fold) and b.group != "synthetic"]
        if not pool:
            continue
        for k in range(per_clip):
            choice = hashlib.sha256(f"{seed}:{clip.filename}:{k}".encode()).hexdigest()[:16]
            rng = np.random.default_rng(int(choice, 16))
            back = pool[int(rng.integers(len(pool)))]
            snr = float(rng.uniform(*SNR_DB))
            key = hashlib.sha256(f"{choice}:{back.filename}:{snr!r}:active:{min_samples}"
                                 .encode()).hexdigest()[:16]
            path = folder / f"mix_{key}.flac"
            if not path.is_file():
                write_flac(path, mix(load_audio(clip.path, RATE), load_audio(back.path, RATE), snr,
                                 rng, min_samples))
            out.append(Clip(f"mix/{key}", path, clip.fold, clip.category, 1, clip.danger_class,
                            f"mix:{clip.filename}", background=back.filename))
    log.info("mixing augmentation: %d danger-in-background clips (SNR %g-%g dB)", len(out),
             *SNR_DB)
    return out


def active_power(signal: np.ndarray) -> float:
    """:func:`edge_runtime.loudness.active_power` of ``RATE`` audio (the level a mix's SNR
    and a window's loudness gain both measure)."""
    return loudness.active_power(signal, RATE)


def mix(signal: np.ndarray, background: np.ndarray, snr_db: float,
        rng: np.random.Generator, min_samples: int = 0) -> np.ndarray:
    """``signal`` over a random stretch of ``background`` (looped if short) at ``snr_db``:
    the signal's active power (:func:`active_power`) over the background's mean power. The
    stretch is ``min_samples`` long where the signal is shorter, the signal at a random offset."""
    n = max(signal.size, min_samples)
    if background.size < n:
        background = np.tile(background, -(-n // max(1, background.size)))
    start = int(rng.integers(0, background.size - n + 1))
    back = background[start:start + n].astype(np.float64)
    p_sig = active_power(signal)
    p_back = float(np.mean(back ** 2))
    if p_back > 1e-12 and p_sig > 1e-12:
        back *= np.sqrt(p_sig / (p_back * 10 ** (snr_db / 10)))
    offset = int(rng.integers(0, n - signal.size + 1))
    back[offset:offset + signal.size] += signal  # ``back`` is a scaled copy: now the mix
    peak = float(np.abs(back).max())
    return back / peak * 0.9 if peak > 0.9 else back

