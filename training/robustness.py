"""``edge-train robustness``: judge the detector on recordings unlike its training clips.

Held-out conditions, all scored through ``Detector.predict`` (the device path):

* **mixes**: each danger clip mixed into safe backgrounds and into the ESC categories outside
  the mapping ("other sounds": sneezing, helicopter, rooster, crackling_fire on ESC-10) at
  +10, 0 and -10 dB SNR;
* **gain**: danger and safe clips at -30, -10 and +10 dB (the last hard-clipped at ±1);
* **noise**: white and pink noise added to danger and safe clips at +10 and 0 dB SNR;
* **synthetic other sounds**: speech from ``espeak-ng`` and tones, sweeps, chords and noise
  from ``sox`` (safe), and danger clips mixed into that speech at 0 dB;
* **short danger**: the loudest 2 s of each danger clip added (at its own level) 4.3 s into
  10 s of safe background — a bark or a siren burst, shorter than the 5 s window — against
  the same 10 s backgrounds alone.

``--window-only`` scores with the Detector's window-only rule (training's); by default the
Detector's chunk decisions are used, as the daemon does.

Fold-out keeps it honest: test sounds built from fold k's clips are scored by a classifier
fitted without fold k (threshold from an inner fold CV on the training folds, as in
``stream_eval``); the synthetic sounds, which no model has seen, are scored by every fold model.
Each row changes one thing: its safe side is the condition's own background (safe clips, other
sounds, speech or sox sounds), so false alarms are attributed to what caused them.

SNR is the ratio of whole-clip mean powers (mean of squares over all 5 s). ESC clips often
hold a short event padded with near-silence, so an event is locally louder than its clip SNR
says. A mix that would exceed full scale is scaled down as a whole (SNR unchanged); only the
+10 dB gain condition clips.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_runtime.audio import AudioError
from edge_runtime.manifest import load_manifest
from training import evaluate
from training.dataset import find_audio, load_audio, read_dataset, read_meta
from training.defaults import kind_of
from training.embed import embed_clips
from training.folds import classifier_section, fit_held_out, fold_model_dir
from training.mapping import manifest_mapping
from training.reports import WORKBENCH, save_report

log = logging.getLogger(__name__)

SAMPLE_RATE = 32_000
SNRS_DB = (10.0, 0.0, -10.0)
GAINS_DB = (-30.0, -10.0, 10.0)
NOISE_SNRS_DB = (10.0, 0.0)
BACKGROUNDS_PER_CLIP = 2
PEAK_LIMIT = 0.99


# --- signal helpers -------------------------------------------------------------------------

def power(x: np.ndarray) -> float:
    """Mean power (mean of squares)."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x * x))


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """10·log10(P_signal / P_noise)."""
    return 10.0 * np.log10(power(signal) / power(noise))


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop to ``n`` samples, or repeat a shorter non-empty signal until it is ``n`` long."""
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot fit an empty signal")
    if x.size < n:
        x = np.tile(x, -(-n // x.size))
    return x[:n].copy()


def scale_to_snr(signal: np.ndarray, background: np.ndarray, snr: float) -> np.ndarray:
    """``background`` scaled so that ``signal`` is ``snr`` dB above it (mean powers)."""
    ps, pb = power(signal), power(background)
    if ps <= 0 or pb <= 0:
        raise ValueError("SNR undefined: signal or background is silent")
    return (np.asarray(background, np.float64) * np.sqrt(ps / (pb * 10 ** (snr / 10)))
            ).astype(np.float32)


def limit_peak(x: np.ndarray, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale the whole signal down if it would exceed ``peak`` (ratios between parts kept)."""
    top = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / top)).astype(np.float32) if top > peak else x.astype(np.float32)


def mix_at_snr(signal: np.ndarray, background: np.ndarray, snr: float) -> np.ndarray:
    """``signal`` + ``background`` (fitted to its length) at ``snr`` dB, peak-limited."""
    background = fit_length(background, len(signal))
    return limit_peak(np.asarray(signal, np.float32) + scale_to_snr(signal, background, snr))


def short_event(danger: np.ndarray, background: np.ndarray, seconds: float = 2.0,
                at_s: float = 4.3, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The loudest ``seconds`` of ``danger`` added at ``at_s`` into ``background``."""
    n = int(seconds * rate)
    energy = np.convolve(danger.astype(np.float64) ** 2, np.ones(rate // 10), "same")
    start = int(np.clip(np.argmax(energy) - n // 2, 0, max(0, danger.size - n)))
    segment = danger[start : start + n]
    out = background.astype(np.float32).copy()
    at = int(at_s * rate)
    out[at : at + segment.size] += segment[: max(0, out.size - at)]
    return limit_peak(out)


def apply_gain(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Multiply by ``gain_db`` and hard-clip to ±1, like a recorder driven too hot."""
    return np.clip(np.asarray(x, np.float32) * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a 1/f power spectrum (amplitude ∝ 1/√f, DC removed), unit power."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    spectrum[0] = 0.0
    spectrum[1:] /= np.sqrt(freqs[1:])
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x * x))).astype(np.float32)


# --- synthetic "other sounds" ----------------------------------------------------------------

SPEECH = (
    ("en", "Good morning. The meeting has moved to three o'clock, please bring the report."),
    ("en-us", "Could you pass me the salt? Dinner is almost ready, so wash your hands."),
    ("de", "Heute ist das Wetter schön, wir gehen am Nachmittag in den Park spazieren."),
    ("fr", "Bonjour, je voudrais un café et deux croissants, s'il vous plaît, merci."),
    ("es", "El tren sale a las nueve y media, no olvides comprar los billetes hoy."),
    ("en-gb", "Remember to water the plants and feed the cat before you leave tonight."),
)
SPEECH_VARIANTS = (("-s", "150", "-p", "50"), ("-s", "120", "-p", "80"))
SOX_SOUNDS = {
    "sine_440": ["synth", "5", "sine", "440", "vol", "0.5"],
    "sine_1k": ["synth", "5", "sine", "1000", "vol", "0.5"],
    "sweep_100_8k": ["synth", "5", "sine", "100:8000", "vol", "0.5"],
    "square_220": ["synth", "5", "square", "220", "vol", "0.2"],
    "triangle_chord": ["synth", "5", "triangle", "261.6", "triangle", "329.6", "remix", "-",
                       "vol", "0.4"],
    "guitar_chord": ["synth", "5", "pluck", "G2", "pluck", "B2", "pluck", "D3", "pluck", "G3",
                     "remix", "-", "norm", "-3"],
    "tremolo_600": ["synth", "5", "sine", "600", "tremolo", "4", "vol", "0.5"],
    "beeps_2k": ["synth", "0.2", "sine", "2000", "pad", "0", "0.3", "repeat", "9", "vol", "0.5"],
    "whitenoise": ["synth", "5", "whitenoise", "vol", "0.2"],
    "pinknoise": ["synth", "5", "pinknoise", "vol", "0.3"],
    "brownnoise": ["synth", "5", "brownnoise", "vol", "0.5"],
}


def _run(cmd: list[str]) -> bool:
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("%s failed (%s); sound skipped", cmd[0], str(exc).splitlines()[0])
        return False
    return True


def synth_speech(folder: Path, seconds: float = 5.0) -> dict[str, np.ndarray]:
    """espeak-ng sentences (several languages, two speeds/pitches); {} without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        log.warning("espeak-ng not found (apt-get install espeak-ng): no speech conditions")
        return {}
    out = {}
    for lang, text in SPEECH:
        for i, variant in enumerate(SPEECH_VARIANTS):
            path = folder / f"speech_{lang}_{i}.wav"
            if _run(["espeak-ng", "-v", lang, *variant, "-w", str(path), text]):
                audio = load_audio(path, SAMPLE_RATE)
                out[path.stem] = fit_length(audio, int(seconds * SAMPLE_RATE))
    return out


def synth_sox(folder: Path, seconds: float = 5.0) -> dict[str, np.ndarray]:
    """sox-generated tones, sweeps, chords, beeps and coloured noise; {} without sox."""
    if shutil.which("sox") is None:
        log.warning("sox not found (apt-get install sox): no tone/noise conditions")
        return {}
    out = {}
    n = int(seconds * SAMPLE_RATE)
    for name, effects in SOX_SOUNDS.items():
        path = folder / f"sox_{name}.wav"
        cmd = ["sox", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), *effects]
        if _run(cmd):
            audio = load_audio(path, SAMPLE_RATE)
            out[path.stem] = np.pad(audio, (0, max(0, n - audio.size)))[:n]
    return out


# --- conditions ----------------------------------------------------------------------------

@dataclass
class Item:
    """One test sound: a cache key (same key = same audio), its label and how to make it."""

    key: str
    label: int
    make: Callable[[], np.ndarray] = field(repr=False)


@dataclass
class FoldAudio:
    """Audio of one held-out fold: danger, safe and other-sound clips by filename."""

    danger: dict[str, np.ndarray]
    safe: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    category: dict[str, str] = field(default_factory=dict)


def fold_conditions(fa: FoldAudio, speech: dict[str, np.ndarray], sox: dict[str, np.ndarray],
                    rng: np.random.Generator) -> dict[str, list[Item]]:
    """Every condition's items for one held-out fold (danger items label 1, others 0)."""
    d, s, o = fa.danger, fa.safe, fa.other
    alone = {"S": s, "O": o, "SP": speech, "SX": sox}

    def plain(group: str, names) -> list[Item]:
        src = alone[group]
        return [Item(f"{group}:{k}", 0, lambda a=src[k]: a) for k in names]

    dangers = [Item(f"D:{k}", 1, lambda a=v: a) for k, v in d.items()]
    conds: dict[str, list[Item]] = {"clean (held-out ESC fold)": dangers + plain("S", s)}
    if o:
        conds["other ESC sounds alone (unseen categories)"] = dangers + plain("O", o)
        for cat in sorted({fa.category[k] for k in o}):
            conds[f"· other: {cat} alone"] = dangers + plain(
                "O", [k for k in o if fa.category[k] == cat])
    for group, bgs, title in (("S", s, "safe backgrounds"), ("O", o, "other ESC sounds")):
        if not bgs:
            continue
        names = sorted(bgs)
        picks = {k: rng.choice(len(names), size=min(BACKGROUNDS_PER_CLIP, len(names)),
                               replace=False) for k in d}
        for snr in SNRS_DB:
            mixes = [Item(f"mix:{group}:{k}:{names[j]}:{snr:+g}", 1,
                          lambda a=d[k], b=bgs[names[j]], r=snr: mix_at_snr(a, b, r))
                     for k in d for j in picks[k]]
            conds[f"danger in {title} @ {snr:+g} dB"] = mixes + plain(group, names)
    for g in GAINS_DB:
        items = [Item(f"gain:{g:+g}:D:{k}", 1, lambda a=v, x=g: apply_gain(a, x))
                 for k, v in d.items()]
        items += [Item(f"gain:{g:+g}:N:{k}", 0, lambda a=v, x=g: apply_gain(a, x))
                  for k, v in s.items()]
        conds[f"gain {g:+g} dB" + (" (clipped)" if g > 0 else "")] = items
    for noise_name, noise_fn in (("white", white_noise), ("pink", pink_noise)):
        for snr in NOISE_SNRS_DB:
            items = []
            for label, group in ((1, d), (0, s)):
                for k, v in group.items():
                    noise = noise_fn(len(v), rng)
                    items.append(Item(f"{noise_name}:{snr:+g}:{label}:{k}", label,
                                      lambda a=v, b=noise, r=snr: mix_at_snr(a, b, r)))
            conds[f"{noise_name} noise @ {snr:+g} dB SNR"] = items
    if speech:
        conds["speech alone (espeak-ng)"] = dangers + plain("SP", speech)
        names = sorted(speech)
        mixes = [Item(f"mix:SP:{k}:{names[j]}:0", 1,
                      lambda a=d[k], b=speech[names[j]]: mix_at_snr(a, b, 0.0))
                 for k in d for j in rng.choice(len(names), size=1)]
        conds["danger in speech @ +0 dB"] = mixes + plain("SP", names)
    if sox:
        conds["tones, chords, beeps, noise alone (sox)"] = dangers + plain("SX", sox)
    if len(s) >= 2:
        names = sorted(s)
        long_bg = {f"{a}+{b}": np.concatenate([s[a], s[b]])
                   for a, b in zip(names, names[1:] + names[:1], strict=True)}
        bg_names = sorted(long_bg)
        pairs = [(k, bg_names[i % len(bg_names)]) for i, k in enumerate(sorted(d))]
        shorts = [Item(f"short:{k}:{b}", 1, lambda a=d[k], x=long_bg[b]: short_event(a, x))
                  for k, b in pairs]
        conds["short danger (2 s) in 10 s of safe background"] = shorts + [
            Item(f"bg10:{k}", 0, lambda a=v: a) for k, v in long_bg.items()]
    return conds


def condition_metrics(y: np.ndarray, p: np.ndarray, thr: np.ndarray) -> dict[str, Any]:
    """Danger recall and false-alarm rate at the fold thresholds and at 0.5; pooled AUC."""
    from sklearn.metrics import roc_auc_score

    pos, neg = y == 1, y == 0
    out: dict[str, Any] = {"n_danger": int(pos.sum()), "n_safe": int(neg.sum())}
    for name, t in (("at_threshold", thr), ("at_0.5", np.full_like(p, 0.5))):
        dec = p >= t
        out[name] = {"danger_recall": float(dec[pos].mean()) if pos.any() else None,
                     "false_alarm_rate": float(dec[neg].mean()) if neg.any() else None,
                     "misses": int((~dec & pos).sum()), "false_alarms": int((dec & neg).sum())}
    out["roc_auc"] = float(roc_auc_score(y, p)) if pos.any() and neg.any() else None
    return out


def load_fold_audio(data: Path, fold: int, mapping, sample_rate: int) -> FoldAudio:
    """Fold ``fold``'s danger, safe and unmapped ("other") clips whose audio exists."""
    fa = FoldAudio({}, {}, {}, {})
    audio_dir = Path(data) / "audio"
    for row in read_meta(Path(data)):
        if int(row["fold"]) != fold:
            continue
        path = find_audio(audio_dir, row["filename"])
        if path is None:
            continue
        try:
            audio = load_audio(path, sample_rate)
        except AudioError as exc:
            log.warning("%s; skipped", exc)
            continue
        if power(audio) <= 0:
            log.warning("%s: silent clip; skipped", path)
            continue
        label = mapping.label(row["category"])
        group = fa.other if label is None else fa.danger if label else fa.safe
        group[row["filename"]] = audio
        fa.category[row["filename"]] = row["category"]
    return fa


def robustness(model_dir: str | Path, data: str | Path, out: str | Path, *,
               kind: str | None = None, folds: list[int] | None = None, seed: int = 0,
               threads: int | None = None, window_only: bool = False,
               target_recall: float = evaluate.DEFAULT_TARGET_RECALL) -> dict[str, Any]:
    """Build every condition per held-out fold, score it with that fold's model, report."""
    from edge_runtime.detector import Detector

    model_dir, out = Path(model_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = load_manifest(model_dir)
    kind = kind_of(manifest, kind)
    mapping = manifest_mapping(manifest)
    emb = embed_clips(model_dir, read_dataset(data, mapping), cache_dir=model_dir / WORKBENCH,
                      threads=threads, measure_offline=False)
    folds = folds or sorted(int(f) for f in np.unique(emb.fold))
    rate = manifest.sample_rate
    rows: dict[str, list] = {}  # condition → [(label, p, threshold)]
    thresholds, counts = {}, {}
    synthetic: dict[str, list[tuple[float, bool]]] = {}  # sound → (p, flagged) per fold
    with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
        speech = synth_speech(Path(tmp))
        sox = synth_sox(Path(tmp))
        for fold in folds:
            pipeline, threshold, train = fit_held_out(emb, kind, fold, seed, target_recall)
            thresholds[fold] = threshold
            fold_dir = fold_model_dir(model_dir, Path(tmp) / f"fold{fold}", pipeline,
                                      emb.x.shape[1], threshold,
                                      classifier_section(manifest, kind, mapping, fold,
                                                         target_recall))
            detector = Detector(fold_dir, provider="cpu", threads=threads,
                                chunk_decisions=not window_only)
            fa = load_fold_audio(Path(data), fold, mapping, rate)
            counts[fold] = {"danger": len(fa.danger), "safe": len(fa.safe),
                            "other": len(fa.other), "train_rows": int(train.sum())}
            conds = fold_conditions(fa, speech, sox, np.random.default_rng([seed, fold]))
            cache: dict[str, float] = {}
            total = sum(len(v) for v in conds.values())
            with tqdm(total=total, desc=f"robustness fold {fold}", unit="sound",
                      disable=None) as bar:
                for name, items in conds.items():
                    for item in items:
                        if item.key not in cache:
                            cache[item.key] = detector.predict(item.make()).probability
                        rows.setdefault(name, []).append((item.label, cache[item.key],
                                                          threshold))
                        bar.update()
            for key, p in cache.items():
                if key.startswith(("SP:", "SX:")):
                    synthetic.setdefault(key.split(":", 1)[1], []).append(
                        (round(p, 4), bool(p >= threshold)))
            log.info("fold %d: %d distinct sounds scored, threshold %.4f", fold, len(cache),
                     threshold)
    results = {}
    for name, triples in rows.items():
        y, p, t = (np.array(v) for v in zip(*triples, strict=True))
        results[name] = condition_metrics(y.astype(int), p.astype(float), t.astype(float))
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_dir": str(model_dir), "backbone": manifest.backbone.name,
        "data": str(data), "kind": kind, "folds": folds, "seed": seed,
        "decisions": "windows only" if window_only else "windows and chunks (default)",
        "scheme": "per held-out fold: classifier fitted on the other folds' embeddings, "
                  "threshold from an inner fold CV on them; sounds built from the held-out "
                  "fold only; synthetic sounds scored by every fold model",
        "snr_definition": "whole-clip mean power ratio; mixes peak-limited to 0.99 by "
                          "scaling the whole mix",
        "fold_thresholds": thresholds, "fold_clip_counts": counts,
        "synthetic": {name: {"p_per_fold_model": [p for p, _ in v],
                             "flagged_by_fold_models": sum(f for _, f in v)}
                      for name, v in sorted(synthetic.items())},
        "deployed_threshold": manifest.threshold,
        "conditions": results,
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["markdown"] = markdown(report)
    save_report(out, "robustness", report, report["markdown"])
    return report


def markdown(report: dict[str, Any]) -> str:
    """One row per condition: counts, recall and false alarms at the threshold and 0.5, AUC."""

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.1f}%"

    thr = ", ".join(f"{f}: {t:.3f}" for f, t in report["fold_thresholds"].items())
    lines = [
        f"Robustness of {report['backbone']} + {report['kind']} (held-out folds "
        f"{report['folds']}; fold thresholds {thr}; decisions: {report['decisions']}).",
        "",
        "| condition | danger / safe sounds | danger recall @t | false alarms @t | "
        "recall @0.5 | false alarms @0.5 | ROC-AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in report["conditions"].items():
        t, h = r["at_threshold"], r["at_0.5"]
        auc = "—" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}"
        lines.append(f"| {name} | {r['n_danger']} / {r['n_safe']} | {pct(t['danger_recall'])} | "
                     f"{pct(t['false_alarm_rate'])} | {pct(h['danger_recall'])} | "
                     f"{pct(h['false_alarm_rate'])} | {auc} |")
    lines.append("")
    return "\n".join(lines)
