"""Smoke and CO alarms made with numpy, as training clips of the class whose mapping
categories list :data:`CATEGORY` (the default mapping: ``smoke_alarm``).

A home alarm is a piezo horn (a near-square wave at 2.8-3.6 kHz) switched in a standard
pattern: smoke alarms the temporal-three (0.5 s on, 0.5 s off, three times, then 1.5 s off;
ISO 8201 / NFPA 72), CO alarms the temporal-four (0.1 s on, 0.1 s off, four times, then 5 s
off), older and cheaper ones a plain on/off beep. ``../shared/openworld`` holds four real
alarm recordings, all long continuous or temporal-three beeping: too few to train the class,
and none in the CO pattern — which the AudioSet head alone hears at about half the class's
threshold (measured: 0 of 20 synthetic CO alarms found, in quiet or under real kitchen, café,
rain or exercise-bike noise, at -10 to -40 dBFS). Each clip varies the tone, its harmonics,
timing, a room's reverberation, a wall's low-pass and the level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.dataset import Clip
from training.negatives import RATE, seeded_rng, write_flac

CATEGORY = "synthetic_alarm"
GROUP = "synthetic_alarm"
COUNT = 32  # clips written
SECONDS = 8.0  # each clip's length (longer than a 5 s window: a window never holds all of it)

# (on, off) steps of one cycle, and the quiet after it
PATTERNS: dict[str, tuple[tuple[tuple[float, float], ...], float]] = {
    "temporal3": (((0.5, 0.5),) * 3, 1.0),
    "temporal4": (((0.1, 0.1),) * 4, 4.9),
}


def _tone(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A piezo horn's tone: fundamental 2.8-3.6 kHz with odd harmonics (a rounded square),
    a slight warble."""
    t = np.arange(int(seconds * RATE)) / RATE
    freq = rng.uniform(2800.0, 3600.0)
    warble = 1.0 + rng.uniform(0.0, 0.01) * np.sin(2 * np.pi * rng.uniform(5.0, 20.0) * t)
    phase = 2 * np.pi * freq * np.cumsum(warble) / RATE
    squareness = rng.uniform(0.0, 1.0)
    out = np.sin(phase)
    for k in (3, 5):  # above 16 kHz (Nyquist at 32 kHz) is dropped by the model's rate anyway
        if k * freq < RATE / 2:
            out += squareness * np.sin(k * phase) / k
    return out


def gate(rng: np.random.Generator, seconds: float, kind: str) -> np.ndarray:
    """The on/off envelope of one alarm pattern (``temporal3``, ``temporal4`` or ``beep``),
    starting anywhere in its cycle."""
    if kind == "beep":
        on = rng.uniform(0.1, 0.6)
        steps, rest = ((on, rng.uniform(0.1, 0.8)),), 0.0
    else:
        steps, rest = PATTERNS[kind]
    stretch = rng.uniform(0.9, 1.1)  # alarms keep time loosely
    cycle = [(on * stretch, off * stretch) for on, off in steps]
    period = sum(on + off for on, off in cycle) + rest * stretch
    n = int(seconds * RATE)
    gate = np.zeros(n + int(period * RATE) + 1)
    at = 0.0
    while at * RATE < gate.size:
        for on, off in cycle:
            i, j = int(at * RATE), int((at + on) * RATE)
            gate[i:j] = 1.0
            at += on + off
        at += rest * stretch
    start = int(rng.uniform(0.0, period) * RATE)
    ramp = int(0.004 * RATE)  # a piezo starts and stops within milliseconds
    kernel = np.ones(ramp) / ramp
    return np.convolve(gate[start:start + n], kernel, mode="same")


def _room(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heard in a room: exponentially decaying noise reverb (RT60 0.2-0.9 s) at a random
    direct-to-reverberant ratio, sometimes through a wall or door (a one-pole low-pass)."""
    rt60 = rng.uniform(0.2, 0.9)
    n = int(rt60 * RATE)
    tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / n)
    tail *= rng.uniform(0.2, 2.0) / np.sqrt(np.sum(tail ** 2))
    tail[0] += 1.0
    size = audio.size + n - 1
    fft = 1 << (size - 1).bit_length()
    spectrum = np.fft.rfft(audio, fft) * np.fft.rfft(tail, fft)
    if rng.random() < 0.4:  # two poles at 2-8 kHz
        freqs = np.fft.rfftfreq(fft, 1.0 / RATE)
        spectrum /= 1.0 + (freqs / rng.uniform(2000.0, 8000.0)) ** 2
    return np.fft.irfft(spectrum, fft)[:audio.size]


def alarm(rng: np.random.Generator, seconds: float = SECONDS) -> np.ndarray:
    """One alarm heard in a room, peak between -30 and -3 dBFS, with a faint noise floor."""
    kind = str(rng.choice(["temporal3", "temporal4", "beep"]))
    audio = _room(_tone(rng, seconds) * gate(rng, seconds, kind), rng)
    audio *= 10 ** (rng.uniform(-30.0, -3.0) / 20) / max(1e-12, float(np.abs(audio).max()))
    return audio + rng.standard_normal(audio.size) * 10 ** (rng.uniform(-80.0, -60.0) / 20)


def alarm_clips(folder: Path, danger_class: str | None, seed: int = 0,
                count: int = COUNT) -> list[Clip]:
    """Write (once) and list ``count`` synthetic alarms under ``folder``, as danger clips of
    ``danger_class`` (the mapping's class for :data:`CATEGORY`; None: no clips)."""
    if danger_class is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(count):
        name = f"alarm_{k:02d}"
        path = folder / f"{name}.flac"
        if not path.is_file():
            write_flac(path, alarm(seeded_rng(seed, name)))
        clips.append(Clip(f"{GROUP}/{name}", path, 0, CATEGORY, 1, danger_class, GROUP))
    return clips
