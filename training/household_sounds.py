"""Household sounds made with numpy, for the synthetic home recordings of
:mod:`training.household` (evaluation audio, never training data).

Every maker takes its own generator and returns float64 audio at 32 kHz with peak 1: the caller
sets the level. Transient events (:data:`EVENTS`): a door closing, footsteps, cutlery and dish
clinks (inharmonic decaying partials), microwave/oven beeps, a phone ringing, a doorbell, a
cough, cupboard knocks. Beds of a given length (:data:`BEDS`): vacuum cleaner and hair dryer
(motor harmonics + broadband noise), a kettle heating up, running water, keyboard typing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from training.negatives import RATE

Maker = Callable[[np.random.Generator], np.ndarray]
BedMaker = Callable[[np.random.Generator, float], np.ndarray]


def _t(seconds: float) -> np.ndarray:
    return np.arange(max(1, int(seconds * RATE))) / RATE


def _peak(audio: np.ndarray) -> np.ndarray:
    return audio / max(1e-12, float(np.abs(audio).max()))


def fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c ≥ ``n`` (numpy's FFT of a length with a large prime factor is
    many times slower)."""
    best, five = 1 << max(0, n - 1).bit_length(), 1
    while five < best:
        three = five
        while three < best:
            best = min(best, three << max(0, -(-n // three) - 1).bit_length())
            three *= 3
        five *= 5
    return best


def band_noise(n: int, lo: float, hi: float, rng: np.random.Generator,
               slope_db: float = 0.0) -> np.ndarray:
    """``n`` samples of noise kept between ``lo`` and ``hi`` Hz (FFT mask), unit RMS; white, or
    falling ``slope_db`` per octave above ``lo`` (airflow and water are not white)."""
    size = fft_size(n)
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1 / RATE)
    spectrum[(freqs < lo) | (freqs > hi)] = 0.0
    if slope_db:
        spectrum *= 10 ** (-slope_db / 20 * np.log2(np.maximum(freqs, lo) / max(lo, 1e-3)))
    out = np.fft.irfft(spectrum, size)[:n]
    return out / max(1e-12, float(np.sqrt(np.mean(out * out))))


def _ring(freq: float, tau: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A decaying sine (one mode of a struck object), random phase."""
    t = _t(seconds)
    return np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi)) * np.exp(-t / tau)


def _burst(seconds: float, lo: float, hi: float, tau: float,
           rng: np.random.Generator) -> np.ndarray:
    """Band-limited noise with an exponential decay (a click, a thump, a puff of air)."""
    return band_noise(max(16, int(seconds * RATE)), lo, hi, rng) * np.exp(-_t(seconds) / tau)


def _place(out: np.ndarray, sound: np.ndarray, at: float) -> None:
    """Add ``sound`` into ``out`` from ``at`` seconds on (cut at the end of ``out``)."""
    i = int(at * RATE)
    if i < out.size:
        n = min(sound.size, out.size - i)
        out[i:i + n] += sound[:n]


def _series(rng: np.random.Generator, count: int, gap: tuple[float, float],
            one: Maker) -> np.ndarray:
    """``count`` sounds made by ``one``, each after a random gap."""
    parts, at = [], 0.0
    for _ in range(count):
        parts.append((at, one(rng)))
        at += rng.uniform(*gap)
    out = np.zeros(int((at + max(p.size for _, p in parts) / RATE) * RATE) + 1)
    for start, part in parts:
        _place(out, part, start)
    return out


# --- transient events -----------------------------------------------------------------------

def door(rng: np.random.Generator) -> np.ndarray:
    """A door closing: the latch click, the slab's low thud, a short rattle."""
    out = np.zeros(int(1.0 * RATE))
    _place(out, 0.3 * _burst(0.01, 2000, 9000, 0.002, rng), 0.0)
    hit = rng.uniform(0.02, 0.08)
    for _ in range(3):
        _place(out, rng.uniform(0.4, 1.0) * _ring(rng.uniform(45, 150), rng.uniform(0.05, 0.2),
                                                  0.9, rng), hit)
    _place(out, 0.8 * _burst(0.2, 40, 600, 0.03, rng), hit)
    _place(out, 0.15 * _burst(0.15, 300, 3000, 0.04, rng), hit + rng.uniform(0.03, 0.1))
    return _peak(out)


def footsteps(rng: np.random.Generator) -> np.ndarray:
    """4–12 steps on a wooden or tiled floor, about two per second."""
    def step(r: np.random.Generator) -> np.ndarray:
        heel = _burst(0.08, 60, 1500, 0.015, r) + 2 * _ring(r.uniform(70, 160), 0.03, 0.08, r)
        return 10 ** (r.uniform(-4, 0) / 20) * heel

    pace = rng.uniform(0.42, 0.65)
    return _peak(_series(rng, int(rng.integers(4, 13)), (pace - 0.05, pace + 0.05), step))


def clinks(rng: np.random.Generator) -> np.ndarray:
    """1–5 clinks of cutlery or dishes: inharmonic decaying partials at random frequencies."""
    def clink(r: np.random.Generator) -> np.ndarray:
        out = 0.2 * _burst(0.003, 3000, 12000, 0.001, r)
        out = np.pad(out, (0, int(0.7 * RATE)))
        for _ in range(int(r.integers(3, 7))):
            out += r.uniform(0.2, 1.0) * _ring(r.uniform(1500, 9000), r.uniform(0.04, 0.5),
                                               out.size / RATE, r)
        return 10 ** (r.uniform(-6, 0) / 20) * out

    return _peak(_series(rng, int(rng.integers(1, 6)), (0.1, 1.5), clink))


def beeps(rng: np.random.Generator) -> np.ndarray:
    """A microwave or oven: 1–5 square-ish beeps at one pitch (1.8–3.2 kHz)."""
    freq, on, off = rng.uniform(1800, 3200), rng.uniform(0.12, 0.6), rng.uniform(0.12, 0.5)
    t = _t(on)
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.005)
    beep = (np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(6 * np.pi * freq * t)) * ramp
    return _peak(_series(rng, int(rng.integers(1, 6)), (on + off, on + off), lambda r: beep))


def phone(rng: np.random.Generator) -> np.ndarray:
    """2–4 rings of a phone: a two-tone trill (old bell) or a short ringtone melody."""
    if rng.random() < 0.5:
        low = rng.uniform(400, 1100)
        t = _t(rng.uniform(0.8, 2.0))
        trill = (np.sin(2 * np.pi * rng.uniform(15, 25) * t) > 0).astype(float)
        ring = trill * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * low * 1.12 * t))
    else:
        scale = rng.uniform(520, 1000) * 2 ** (np.array([0, 2, 4, 7, 9, 12]) / 12)
        notes = []
        for f in rng.choice(scale, int(rng.integers(4, 9))):
            t = _t(rng.choice([0.12, 0.18, 0.25]))
            notes.append((np.sin(2 * np.pi * f * t) + 0.25 * np.sin(4 * np.pi * f * t))
                         * np.exp(-t / 0.15))
        ring = np.concatenate(notes)
    period = ring.size / RATE + rng.uniform(1.5, 3.5)
    return _peak(_series(rng, int(rng.integers(2, 5)), (period, period), lambda r: ring))


def doorbell(rng: np.random.Generator) -> np.ndarray:
    """A doorbell: a ding-dong chime (two struck bars) or an electric buzzer."""
    if rng.random() < 0.7:
        high = rng.uniform(550, 900)
        out = np.zeros(int(2.8 * RATE))
        for at, f in ((0.0, high), (rng.uniform(0.4, 0.7), high * rng.uniform(0.75, 0.84))):
            bar = sum(a * _ring(f * k, rng.uniform(0.6, 1.4) / k, 2.0, rng)
                      for k, a in ((1, 1.0), (2.76, 0.4), (5.4, 0.15)))
            _place(out, bar, at)
        return _peak(out)
    t = _t(rng.uniform(0.5, 1.5))
    buzz = np.sign(np.sin(2 * np.pi * rng.uniform(100, 250) * t))
    return _peak(buzz + 0.3 * band_noise(t.size, 1000, 6000, rng) * buzz)


def cough(rng: np.random.Generator) -> np.ndarray:
    """1–3 coughs: bursts of band-limited noise with a little voicing."""
    def one(r: np.random.Generator) -> np.ndarray:
        t = _t(r.uniform(0.25, 0.45))
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / r.uniform(0.05, 0.12))
        f0 = r.uniform(110, 230)
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
        return (band_noise(t.size, 300, 3500, r) + 0.3 * voiced) * envelope

    return _peak(_series(rng, int(rng.integers(1, 4)), (0.3, 0.6), one))


def knock(rng: np.random.Generator) -> np.ndarray:
    """1–3 knocks of a cupboard door or a drawer: short wooden modes and a click."""
    def one(r: np.random.Generator) -> np.ndarray:
        out = 0.4 * _burst(0.2, 500, 6000, 0.004, r)
        for _ in range(3):
            out += r.uniform(0.3, 1.0) * _ring(r.uniform(180, 700), r.uniform(0.02, 0.06),
                                               0.2, r)
        return 10 ** (r.uniform(-4, 0) / 20) * out

    return _peak(_series(rng, int(rng.integers(1, 4)), (0.15, 0.4), one))


EVENTS: dict[str, Maker] = {"door": door, "footsteps": footsteps, "clinks": clinks,
                            "beeps": beeps, "phone": phone, "doorbell": doorbell,
                            "cough": cough, "knock": knock}


# --- beds: longer sounds of a given length --------------------------------------------------

def _on_off(t: np.ndarray, rise: float, fall: float) -> np.ndarray:
    """0 → 1 over ``rise`` seconds at the start, 1 → 0 over ``fall`` at the end."""
    return np.clip(np.minimum(t / rise, (t[-1] - t) / fall), 0.0, 1.0)


def _motor(rng: np.random.Generator, seconds: float, rotation: tuple[float, float],
           blades: tuple[int, int], band: tuple[float, float], sweep: bool) -> np.ndarray:
    """A fan motor: weak harmonics of the rotation, the impeller's blade-pass whine, and
    airflow noise (falling 3 dB per octave) that dominates; spin-up and spin-down."""
    t = _t(seconds)
    speed = _on_off(t, 1.5, 2.0) ** 0.5
    wander = 1 + 0.02 * band_noise(t.size, 0.05, 1.0, rng) / 3
    phase = 2 * np.pi * np.cumsum(rng.uniform(*rotation) * (0.3 + 0.7 * speed) * wander) / RATE
    hum = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 7))
    pass_rate = int(rng.integers(blades[0], blades[1] + 1))
    whine = sum(np.sin(k * pass_rate * phase + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2))
    out = (0.15 * hum + rng.uniform(0.1, 0.25) * whine
           + band_noise(t.size, *band, rng, slope_db=3.0)) * speed
    if sweep:  # a vacuum cleaner moves back and forth: its level swings
        out *= 1 + 0.35 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    return _peak(out)


def vacuum(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A vacuum cleaner: a 20–35 000 rpm motor (330–580 Hz), a 6–10 blade impeller's whine,
    broadband airflow, the level swinging as it moves."""
    return _motor(rng, seconds, (330, 580), (6, 10), (100, 10000), True)


def hair_dryer(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A hair dryer: a small fan motor (250–450 Hz, 5–9 blades) under bright, steady airflow."""
    return _motor(rng, seconds, (250, 450), (5, 9), (150, 12000), False)


def kettle(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A kettle heating up: rumble and hiss growing, bubbles getting denser, the switch."""
    t = _t(seconds)
    heat = (t / t[-1]) ** 1.5
    out = (band_noise(t.size, 40, 600, rng) + 0.4 * band_noise(t.size, 2000, 8000, rng)) * heat
    times = rng.uniform(0, t[-1], int(30 * seconds))
    for at in np.sort(times[rng.random(times.size) < times / t[-1]]):  # denser as it heats
        _place(out, 1.5 * _ring(rng.uniform(300, 1500), 0.004, 0.02, rng), at)
    _place(out, 4.0 * _burst(0.02, 1000, 8000, 0.003, rng), t[-1] - 0.05)
    return _peak(out)


def water(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A running tap: band-limited noise with a fluctuating level and droplet chirps."""
    t = _t(seconds)
    level = 1 + 0.3 * band_noise(t.size, 0.1, 6.0, rng) / 3
    out = band_noise(t.size, 400, 7000, rng, slope_db=2.0) * level * _on_off(t, 0.2, 0.3)
    chirp_t = _t(0.02)
    for at in rng.uniform(0, t[-1], int(25 * seconds)):
        f = rng.uniform(600, 1500) * (1 + 25 * chirp_t)
        drop = np.sin(2 * np.pi * np.cumsum(f) / RATE) * np.exp(-chirp_t / 0.006)
        _place(out, rng.uniform(0.5, 2.0) * drop, at)
    return _peak(out)


def typing(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Keyboard typing: words of 2–9 key clicks, louder space bars, pauses to think."""
    out = np.zeros(_t(seconds).size)
    at = rng.uniform(0, 0.5)
    while at < seconds:
        for _ in range(int(rng.integers(2, 10))):
            key = 0.6 * _burst(0.012, 1500, 9000, 0.004, rng) \
                + 0.5 * _ring(rng.uniform(2000, 4500), 0.006, 0.012, rng)
            _place(out, rng.uniform(0.5, 1.0) * key, at)
            at += rng.uniform(0.08, 0.22)
        _place(out, _burst(0.02, 400, 5000, 0.006, rng)
               + 0.5 * _ring(rng.uniform(600, 1500), 0.01, 0.02, rng), at)
        at += rng.uniform(0.15, 0.4) + (rng.uniform(1.0, 4.0) if rng.random() < 0.12 else 0.0)
    return _peak(out)


BEDS: dict[str, BedMaker] = {"vacuum": vacuum, "hair_dryer": hair_dryer, "kettle": kettle,
                             "water": water, "typing": typing}
