"""Long synthetic home recordings (living room / kitchen) for false events per hour.

``edge-train build`` trains on :data:`TRAIN_MINUTES` of it with its own seed
(:data:`TRAIN_SEED`, :func:`home_clips`) as safe negatives; evaluations use other seeds (the
results use seed 7), so they are new recordings of the same generator — nearer to training than
real homes are, and said so wherever they are reported. Its sentences and voices differ from
the build's speech negatives (:data:`training.negatives.SPEECH`, default voices).

``edge-train synth-home --out DIR`` writes ``DIR/audio/*.flac`` (at most ``--file-minutes``
each) and ``DIR/labels.csv`` (label ``safe``, category ``synthetic_home``, no fold), the layout
``edge-train evaluate --data`` and ``build --extra`` read. Each file is streamed to disk block
by block (memory: one scene, not the file) and appears only once complete. A file's audio
depends on the seed, its index and its length alone, so a rerun with the same arguments
reuses every file, and a longer run reuses the files of a shorter one. ``DIR/timeline/`` says
what each file holds when (``start_s,end_s,layer,kind``: the scenes and the events laid over
them), so a false event can be traced to the sound under it.

Content, scene after scene: what :func:`home_ambience` has (espeak-ng speech in several voices
and languages, plucked music, speech over music like a TV, room noise at −55…−35 dBFS,
silence) plus appliances (vacuum cleaner, hair dryer, kettle, running tap, typing; 13 % of the
time, :data:`SCENES`), all over a constant room-noise floor, with sparse household events on
top (about one every 45 s: doors, footsteps, clinks, beeps, phone, doorbell, espeak-ng
laughter, coughs, knocks).
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from edge_runtime import atomic
from training.dataset import Clip, load_audio
from training.household_sounds import BEDS, EVENTS, fft_size
from training.labelled import csv_text
from training.negatives import RATE, flac_writer, music, noise, speak, write_flac

log = logging.getLogger(__name__)

CATEGORY = "synthetic_home"
# What the build trains on: without it, dog_bark held out of UrbanSound8K fold 3 raised 20 false
# events per hour on 3 h of seed-7 home audio (plucked music and TV heard as dog_bark); with 40
# minutes of seed 11, 1.6 per hour.
TRAIN_SEED = 11
TRAIN_MINUTES = 40.0
FILE_MINUTES = 10.0
COLUMNS = ("file", "label", "category", "fold", "duration_s", "source")
TIMELINE_COLUMNS = ("start_s", "end_s", "layer", "kind")
Mark = tuple[float, float, str, str]  # start s, end s, layer (scene or event), kind
HOME_SENTENCES = (
    ("en-us", "I think we should paint the kitchen blue this summer, what do you think?"),
    ("en-gb", "The train to the city leaves at half past nine from platform four."),
    ("en", "Hello, this is your captain speaking, we will be landing in twenty minutes."),
    ("de", "Kannst du bitte das Fenster schließen, es wird langsam kalt hier drinnen."),
    ("fr", "Nous allons au marché samedi matin, tu veux venir avec nous?"),
    ("es", "Mañana tenemos que llevar el coche al taller antes de las diez."),
    ("it", "Stasera guardiamo un film e ordiniamo una pizza, va bene per te?"),
    ("en-us", "And now the weather: a sunny afternoon with a light breeze from the west."),
)
MORE_SENTENCES = (
    ("en-gb", "Has anyone seen my keys? I left them on the table next to the fruit bowl."),
    ("en-us", "Tonight on the news: the council approved the new budget for the schools."),
    ("en", "Two eggs, a cup of flour and a pinch of sugar, then stir it for a minute."),
    ("de", "Die Kinder spielen im Garten, und der Hund schläft auf dem Sofa."),
    ("fr", "Le film commence à huit heures, il faut partir dans dix minutes."),
    ("es", "¿Quieres más café? Todavía queda un poco en la cafetera."),
    ("it", "Domani piove, quindi prendi l'ombrello quando esci di casa."),
    ("nl", "Wil je thee of koffie? Ik heb ook nog wat koekjes in de kast."),
    ("pt", "O jantar está na mesa, venham comer antes que arrefeça."),
    ("sv", "Kan du handla mjölk och bröd på vägen hem i kväll?"),
    ("en-us", "Thanks for calling, your order will arrive on Thursday between nine and noon."),
    ("en-gb", "Shall I put the kettle on? There's still some cake left from yesterday."),
)
VARIANTS = ("m1", "f2", "m3", "f4", "m7", "f1", "m5", "f5")  # espeak-ng voice variants
LAUGHS = ("ha ha ha ha", "hahaha ha", "he he he", "ha ha, ha ha ha")
AMBIENCE = ("speech", "music", "tv", "room", "silence")
# scene kind → share of the time: mostly a quiet room, conversation and TV, appliances 13 %
SCENES = {"room": 0.36, "speech": 0.2, "tv": 0.2, "music": 0.06, "silence": 0.05,
          "typing": 0.04, "water": 0.03, "kettle": 0.02, "vacuum": 0.02, "hair_dryer": 0.02}
BED_SECONDS = {"vacuum": (20, 90), "hair_dryer": (30, 120), "kettle": (60, 180),
               "water": (3, 25), "typing": (10, 60)}
# mean length of one scene (ambience_segment's: three sentences ≈ 12 s, music 7.2 s, room
# noise 20 s, silence 9 s), to turn time shares into how often each kind is picked
SCENE_SECONDS = {"speech": 12.0, "tv": 12.0, "music": 7.2, "room": 20.0, "silence": 9.0,
                 **{k: (lo + hi) / 2 for k, (lo, hi) in BED_SECONDS.items()}}
# peak level range, dBFS, of each bed and event (a microphone across the room)
LEVELS = {"vacuum": (-18, -6), "hair_dryer": (-20, -8), "kettle": (-24, -10),
          "water": (-26, -12), "typing": (-34, -20),
          "door": (-14, -3), "footsteps": (-32, -18), "clinks": (-26, -10), "beeps": (-28, -14),
          "phone": (-26, -12), "doorbell": (-22, -8), "laughter": (-22, -8),
          "cough": (-22, -8), "knock": (-24, -10)}
EVENT_WEIGHTS = {"door": 0.14, "footsteps": 0.16, "clinks": 0.16, "knock": 0.1, "cough": 0.1,
                 "laughter": 0.1, "beeps": 0.08, "phone": 0.06, "doorbell": 0.04}
EVENT_GAP_S = 45.0  # mean time between household events
FLOOR_DBFS = (-62.0, -48.0)  # each file's constant room-noise floor (RMS)


# --- speech ---------------------------------------------------------------------------------

@dataclass
class Voices:
    """Rendered espeak-ng speech (sentences) and laughter, 32 kHz; empty without espeak-ng."""

    speech: list[np.ndarray] = field(default_factory=list)
    laughs: list[np.ndarray] = field(default_factory=list)
    version: str | None = None


def espeak_version() -> str | None:
    """espeak-ng's version (``1.51``), or None when it is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    done = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True,
                          timeout=30, check=False)
    words = done.stdout.split(":", 1)[-1].split()
    return words[0] if done.returncode == 0 and words else "unknown"


def render_voices() -> Voices:
    """Every home sentence in two voice variants and the laughs in four (one warning and no
    speech without espeak-ng)."""
    version = espeak_version()
    if version is None:
        log.warning("espeak-ng not found (apt-get install espeak-ng): no speech or laughter")
        return Voices()
    voices = Voices(version=version)
    with tempfile.TemporaryDirectory(prefix="synth-home-") as tmp:
        wav = Path(tmp) / "say.wav"
        jobs = [(voices.speech, f"{lang}+{VARIANTS[(2 * i + j) % len(VARIANTS)]}", text,
                 120 + 15 * ((i + j) % 5), 30 + 12 * ((i + 2 * j) % 5))
                for i, (lang, text) in enumerate(HOME_SENTENCES + MORE_SENTENCES)
                for j in range(2)]
        jobs += [(voices.laughs, f"en+{VARIANTS[k]}", text, 190 + 10 * k, 70 + 5 * k)
                 for k, text in enumerate(LAUGHS)]
        for bank, voice, text, speed, pitch in jobs:
            if speak(wav, voice, text, speed, pitch):
                bank.append(load_audio(wav, RATE))
            else:
                log.warning("espeak-ng failed for voice %s; skipped", voice)
    return voices


# --- scenes ---------------------------------------------------------------------------------

def ambience_segment(kind: str, rng: np.random.Generator,
                     speech: list[np.ndarray]) -> np.ndarray:
    """One stretch of :data:`AMBIENCE` ``kind``: three sentences, music (≈ 7 s), sentences over
    music (a TV), 20 s of room noise at −55…−35 dBFS, or 3–15 s of silence; gain −12…0 dB."""
    if kind in ("speech", "tv") and speech:
        seg = np.concatenate([speech[int(rng.integers(len(speech)))] for _ in range(3)])
        if kind == "tv":
            seg = seg + 0.3 * np.resize(music(rng), seg.size)
    elif kind in ("music", "tv"):
        seg = music(rng)
    elif kind == "room":
        seg = noise("pink", 20 * RATE, rng) * 10 ** (rng.uniform(-55, -35) / 20)
    else:
        seg = np.zeros(int(rng.uniform(3, 15) * RATE))
    return seg * 10 ** (rng.uniform(-12, 0) / 20)


def home_ambience(folder: Path, minutes: float = 30.0, seed: int = 1) -> Path:
    """The first synthetic "living room" (30 min of it measured in training/RESULTS_MN04.md):
    :func:`ambience_segment` scenes only, one FLAC in ``folder``, written once; its path."""
    path = folder / f"home_ambience_{minutes:g}min_seed{seed}.flac"
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    speech = []
    if shutil.which("espeak-ng"):
        for i, (voice, text) in enumerate(HOME_SENTENCES):
            wav = folder / f".home_speech_{i}.wav"
            if speak(wav, voice, text, 130 + 10 * (i % 4), 35 + 9 * i):
                speech.append(load_audio(wav, RATE))
                wav.unlink()
    parts, total = [], int(minutes * 60 * RATE)
    while sum(p.size for p in parts) < total:
        parts.append(ambience_segment(rng.choice(AMBIENCE), rng, speech))
    write_flac(path, np.concatenate(parts)[:total])
    return path


def _scene(rng: np.random.Generator, voices: Voices) -> tuple[str, np.ndarray]:
    """The next scene of a home recording (its kind, its audio), events not yet added."""
    odds = np.array([share / SCENE_SECONDS[k] for k, share in SCENES.items()])
    kind = str(rng.choice(list(SCENES), p=odds / odds.sum()))
    if kind in BEDS:
        bed = BEDS[kind](rng, rng.uniform(*BED_SECONDS[kind]))
        return kind, bed * 10 ** (rng.uniform(*LEVELS[kind]) / 20)
    return kind, ambience_segment(kind, rng, voices.speech) * 10 ** (rng.uniform(-6, 0) / 20)


def _add_events(scene: np.ndarray, rng: np.random.Generator,
                voices: Voices) -> list[tuple[int, int, str]]:
    """Sparse household events (Poisson, one per :data:`EVENT_GAP_S` on average) into
    ``scene``, in place (one running past its end is cut); their (start, end sample, kind)."""
    kinds = [k for k in EVENT_WEIGHTS if k != "laughter" or voices.laughs]
    weights = np.array([EVENT_WEIGHTS[k] for k in kinds])
    added = []
    for _ in range(int(rng.poisson(scene.size / RATE / EVENT_GAP_S))):
        kind = str(rng.choice(kinds, p=weights / weights.sum()))
        sound = (voices.laughs[int(rng.integers(len(voices.laughs)))] if kind == "laughter"
                 else EVENTS[kind](rng))
        sound = sound / max(1e-12, float(np.abs(sound).max()))
        at = int(rng.integers(scene.size))
        n = min(sound.size, scene.size - at)
        scene[at:at + n] += sound[:n] * 10 ** (rng.uniform(*LEVELS[kind]) / 20)
        added.append((at, at + n, kind))
    return added


def home_blocks(seed: int, index: int, samples: int,
                voices: Voices) -> Iterator[tuple[np.ndarray, list[Mark]]]:
    """The audio of file ``index`` (``samples`` long) as consecutive scenes, each with what it
    holds: (start s, end s, ``scene`` or ``event``, kind) in the file's time."""
    rng = np.random.default_rng([seed, index])
    floor = 10 ** (rng.uniform(*FLOOR_DBFS) / 20)
    done = 0
    while done < samples:
        kind, scene = _scene(rng, voices)
        scene = scene[:samples - done].astype(np.float64)
        events = _add_events(scene, rng, voices)
        scene += noise("pink", fft_size(scene.size), rng)[:scene.size] * floor
        marks = [(done / RATE, (done + scene.size) / RATE, "scene", kind)]
        marks += [((done + a) / RATE, (done + b) / RATE, "event", k) for a, b, k in events]
        done += scene.size
        yield scene, marks


# --- the folder -----------------------------------------------------------------------------

def file_lengths(minutes: float, file_minutes: float) -> list[int]:
    """Sample counts of the files: whole ``file_minutes`` files, then the rest."""
    for name, value in (("--minutes", minutes), ("--file-minutes", file_minutes)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of minutes, not {value:g}")
    total, per_file = round(minutes * 60 * RATE), round(file_minutes * 60 * RATE)
    if total < RATE:
        raise ValueError(f"--minutes {minutes:g} is under one second of audio")
    lengths = [per_file] * (total // per_file)
    if total % per_file >= RATE // 10:
        lengths.append(total % per_file)
    return lengths


def file_name(seed: int, index: int, samples: int) -> str:
    """``home_s7_003_600s.flac``: everything the file's audio depends on."""
    return f"home_s{seed}_{index:03d}_{samples / RATE:g}s.flac"


def timeline_path(out: Path, name: str) -> Path:
    """Where the timeline of audio file ``name`` is kept."""
    return out / "timeline" / f"{Path(name).stem}.csv"


def _complete(path: Path, samples: int) -> bool:
    try:
        return path.is_file() and sf.info(str(path)).frames == samples
    except (RuntimeError, sf.LibsndfileError):
        return False


def synth_home(out: str | Path, minutes: float = 60.0, seed: int = 1,
               file_minutes: float = FILE_MINUTES) -> dict[str, Any]:
    """Write (or reuse) the home recordings and ``labels.csv`` under ``out``; a summary."""
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a folder")
    lengths = file_lengths(minutes, file_minutes)
    voices: Voices | None = None
    rows, made = [], 0
    for index, samples in enumerate(lengths):
        name = file_name(seed, index, samples)
        path = out / "audio" / name
        if not (_complete(path, samples) and timeline_path(out, name).is_file()):
            voices = voices or render_voices()
            began = time.perf_counter()
            marks: list[Mark] = []
            with flac_writer(path) as write:
                for block, held in home_blocks(seed, index, samples, voices):
                    write(block)
                    marks += held
            atomic.write_text(timeline_path(out, name), csv_text(
                TIMELINE_COLUMNS, [[f"{a:.3f}", f"{b:.3f}", layer, kind]
                                   for a, b, layer, kind in marks]))
            made += 1
            log.info("%s: %.0f s of audio in %.1f s", path, samples / RATE,
                     time.perf_counter() - began)
        rows.append(name)
    version = voices.version if voices is not None else espeak_version()
    source = (f"synthetic: edge-train synth-home --seed {seed} (numpy"
              + (f", espeak-ng {version})" if version else "; no espeak-ng: no speech)"))
    atomic.write_text(out / "labels.csv", csv_text(COLUMNS, [
        [name, "safe", CATEGORY, "", f"{samples / RATE:.3f}", source]
        for name, samples in zip(rows, lengths, strict=True)]))
    return {"out": str(out), "files": len(rows), "written": made, "reused": len(rows) - made,
            "audio_minutes": sum(lengths) / RATE / 60,
            "bytes": sum((out / "audio" / n).stat().st_size for n in rows),
            "seconds": round(time.perf_counter() - start, 1), "source": source}


def home_clips(folder: Path, minutes: float = TRAIN_MINUTES, seed: int = TRAIN_SEED
               ) -> list[Clip]:
    """Safe training clips: ``minutes`` of home audio under ``folder`` (written once), one
    recording-disjoint CV group of their own."""
    synth_home(folder, minutes, seed)
    names = [file_name(seed, i, n) for i, n in enumerate(file_lengths(minutes, FILE_MINUTES))]
    return [Clip(f"synthetic_home/{name}", folder / "audio" / name, 0, CATEGORY, 0, None,
                 "synthetic_home") for name in names]
