"""Named danger classes with the real mn04 weights: build, manifest contract, device path.

The class model is built on 2 ESC-10 clips per category and fold plus a small --extra folder
(12 UrbanSound8K fold-1 gunshots, safe street music) from ../shared/openworld; every assertion
about detection uses clips or sounds it never trained on. Synthetic sounds here (tones, noise,
espeak-ng speech) differ from the build's own synthetic negatives (other frequencies, levels and
sentences).
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.detector import Detector
from edge_runtime.manifest import load_manifest
from tests.helpers import ended_events, shared_path, unseen_clips
from training.mapping import default_mapping

LIMIT = 2
RATE = 32_000


def _varied(rows: list[dict[str, str]], n: int, per_recording: int = 2) -> list[dict[str, str]]:
    """The first ``n`` rows taking at most ``per_recording`` clips of each source recording
    (UrbanSound8K names: ``..._<freesound id>-<class>-<occurrence>-<slice>.flac``)."""
    taken: dict[str, int] = {}
    out = []
    for r in rows:
        recording = r["file"].rsplit("_", 1)[-1].split("-")[0]
        if taken.get(recording, 0) < per_recording and len(out) < n:
            taken[recording] = taken.get(recording, 0) + 1
            out.append(r)
    return out


def _extra_folder(dest: Path) -> Path:
    """A labels.csv folder (the openworld layout) with fold-1 gunshots and street music, at
    most 2 clips of each recording (12 clips of 4 recordings taught a gunshot class that fired
    on a clock tick)."""
    source = shared_path("openworld")
    rows = list(csv.DictReader((source / "labels.csv").open(encoding="utf-8")))
    picked = (_varied([r for r in rows if r["category"] == "gun_shot" and r["fold"] == "1"], 12)
              + _varied([r for r in rows
                         if r["category"] == "street_music" and r["fold"] == "1"], 12))
    (dest / "audio").mkdir(parents=True)
    for r in picked:
        (dest / "audio" / r["file"]).symlink_to(source / "audio" / r["file"])
    with (dest / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["file", "label", "category", "fold"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in ("file", "label", "category", "fold")}
                         for r in picked)
    return dest


@pytest.fixture(scope="module")
def class_model(mn04_weights: Path, esc10_dir: Path, tmp_path_factory) -> Path:
    from training.build import build

    root = tmp_path_factory.mktemp("classes")
    extra = _extra_folder(root / "extra")
    out = root / "model"
    build(esc10_dir, out, str(mn04_weights), per_fold_limit=LIMIT, measure_offline=False,
          extras=(extra,))
    return out


def unseen(esc10_dir: Path, category: str, n: int = 3) -> list[Path]:
    return unseen_clips(esc10_dir, default_mapping(), category, LIMIT, n)


def run_daemon(model: Path, source: Path, events: Path) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", str(source), "--once", "--settle", "0", "--events",
                          str(events), "-q"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return ended_events(events) if events.exists() else []


def test_manifest_declares_classes_and_their_evidence(class_model: Path) -> None:
    manifest = load_manifest(class_model)
    classes = manifest.classes
    evidence = dict(zip(classes.names, [None] * len(classes.names), strict=True))
    assert {"dog_bark", "baby_cry", "chainsaw", "gunshot"} <= set(evidence)
    assert {"smoke_alarm", "scream", "explosion", "glass_break"} <= set(evidence)
    assert classes.evidence == ("trained", "audioset")
    assert classes.output == "class_scores"
    assert len(classes.thresholds) == len(classes.names)
    assert all(0.0 < t < 1.0 for t in classes.thresholds)
    assert classes.level_gate_dbfs == -70.0  # only near-silence is gated: the negatives' floor
    assert manifest.streaming.window_embedding == "whole"
    assert manifest.streaming.chunk_decisions is False
    assert manifest.streaming.window_stride == 2
    assert "frontend" in manifest.files  # log-mel once per chunk, its own graph
    # quiet windows are heard raised toward -20 dBFS (by gain.onnx, at most 20 dB): format 4
    assert (manifest.streaming.gain_target_dbfs, manifest.streaming.gain_max_db) == (-20.0, 20.0)
    assert "gain" in manifest.files and manifest.format_version == 4
    assert manifest.classifier.trained_on["extras"] == ["extra"]
    report = json.loads((class_model / "report.json").read_text())
    assert report["parity"]["max_abs_diff"] < 1e-4  # classifier.onnx vs scikit-learn + numpy
    assert report["evidence"]["glass_break"] == "audioset"  # 0 clips: zero-shot
    assert report["evidence"]["gunshot"] == "trained"
    assert report["evidence"]["smoke_alarm"] == "trained"  # 32 synthetic alarms
    # the head's weights live in head.onnx alone: classifier.onnx reads its output
    import onnx

    graph = onnx.load(str(class_model / "classifier.onnx"), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["embedding", "audioset_probs"]
    assert (class_model / "classifier.onnx").stat().st_size < 200_000


@pytest.mark.parametrize("seconds, spans", [
    (3, [(0, 3)]),  # shorter than a window: one short window
    (6, [(0, 5), (1, 6)]),  # the chunk after the last scored window gets a window at the end
    (7, [(0, 5), (2, 7)]),
    (8, [(0, 5), (2, 7), (3, 8)]),
    (6.5, [(0, 5), (2, 7)]),  # the last chunk half audio, half zero padding
])
def test_windows_every_stride_equal_the_training_features(class_model: Path, seconds: float,
                                                          spans: list[tuple[int, int]]) -> None:
    """A window every 2 chunks, each embedded from its chunks' cached log-mels exactly as
    training embeds that span (features.embed_audio), raised by the same loudness gain (this
    noise is about -26 dBFS: +6 dB); none is skipped at the end."""
    from edge_runtime.features import embed_audio

    detector = Detector(class_model, provider="cpu")
    n = int(seconds * RATE)
    audio = (0.05 * np.random.default_rng(n).standard_normal(n)).astype(np.float32)
    stream = detector.stream()
    scores = stream.push(audio[: n // 2]) + stream.push(audio[n // 2:])
    scores += stream.finish()
    assert [(round(s.start_s), math.ceil(s.end_s)) for s in scores] == spans
    reference, ref_spans = embed_audio(detector.sessions, audio)
    by_span = dict(zip(ref_spans, reference, strict=True))
    for score, span in zip(scores, spans, strict=True):
        # same ONNX graphs on the same log-mels: equal to float32 rounding
        np.testing.assert_allclose(score.embedding, by_span[span], rtol=0, atol=1e-5)


def test_unseen_dog_is_dog_bark_and_unseen_rain_is_safe(class_model: Path,
                                                        esc10_dir: Path) -> None:
    detector = Detector(class_model, provider="cpu")
    for path in unseen(esc10_dir, "dog"):
        pred = detector.predict(path)
        assert pred.label == "danger", (path.name, pred.probability)
        assert pred.danger_class == "dog_bark", (path.name, pred.danger_class)
    for path in unseen(esc10_dir, "rain") + unseen(esc10_dir, "sea_waves"):
        pred = detector.predict(path)
        assert pred.label == "safe", (path.name, pred.probability)
        assert pred.danger_class is None


def test_silence_quiet_noise_tones_and_speech_raise_no_event(class_model: Path,
                                                             tmp_path: Path) -> None:
    folder = tmp_path / "quiet"
    folder.mkdir()
    rng = np.random.default_rng(7)
    t = np.arange(10 * RATE) / RATE
    sounds = {
        "silence.wav": np.zeros(10 * RATE),
        "noise_minus60dbfs.wav": rng.standard_normal(10 * RATE) * 10 ** (-60 / 20),
        # just above the -70 dBFS level gate: the classifier itself must call it safe
        "noise_minus67dbfs.wav": rng.standard_normal(10 * RATE) * 10 ** (-67 / 20),
        "sine_523hz.wav": 0.3 * np.sin(2 * np.pi * 523.25 * t),
        "sine_1500hz.wav": 0.5 * np.sin(2 * np.pi * 1500.0 * t),
        # a quiet room through a cheap microphone: 50 Hz mains hum and 7 harmonics at about
        # -35 dBFS over -50 dBFS noise (what the loudness gain raises by 15 dB)
        "mains_hum.wav": sum(0.7 ** k * np.sin(2 * np.pi * 50.0 * (k + 1) * t) for k in range(8))
        * 10 ** (-35 / 20) / 1.1 + rng.standard_normal(10 * RATE) * 10 ** (-50 / 20),
    }
    for name, audio in sounds.items():
        sf.write(folder / name, audio.astype(np.float32), RATE)
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(folder / "speech.wav"),
                        "The kettle is on. I will call you back after lunch, around two."],
                       check=True, capture_output=True)
    records = run_daemon(class_model, folder, tmp_path / "events.jsonl")
    assert records == [], [(r["source"], r.get("class"), r["peak_probability"])
                           for r in records]


def test_one_dog_in_a_30s_stream_is_one_dog_bark_event(class_model: Path, esc10_dir: Path,
                                                       tmp_path: Path) -> None:
    rain, sea, clock = (unseen(esc10_dir, c, 2) for c in ("rain", "sea_waves", "clock_tick"))
    dog = unseen(esc10_dir, "dog", 1)
    parts = [rain[0], sea[0], dog[0], clock[0], rain[1], sea[1]]
    # 50 ms fades at the joins: a hard cut from the clock (-38 dBFS) into rain (-22 dBFS) is a
    # broadband click, a real bang over rain, and the small test model's gunshot class (which
    # learnt gunshots mixed over rain and clocks) reported it (head: Boom 0.22).
    fade = np.linspace(0.0, 1.0, int(0.05 * RATE), dtype=np.float32)
    clips = [sf.read(p, dtype="float32")[0] for p in parts]
    for clip in clips:
        clip[:fade.size] *= fade
        clip[-fade.size:] *= fade[::-1]
    stream = np.concatenate(clips)
    sf.write(tmp_path / "stream.flac", stream, RATE)
    records = run_daemon(class_model, tmp_path / "stream.flac", tmp_path / "events.jsonl")
    assert len(records) == 1, records
    (rec,) = records
    assert rec["class"] == "dog_bark"
    # the dog clip spans 10-15 s; its barks may stop before the clip does
    assert 9.0 <= rec["offset_start_s"] <= 11.0 and 11.5 <= rec["offset_end_s"] <= 16.0, rec


def test_a_quiet_dog_is_heard_as_a_louder_one(class_model: Path, esc10_dir: Path) -> None:
    """The loudness gain: an unseen dog played at -30 and at -38 dBFS (active level) reaches
    the backbone at -20 dBFS both times (same window embedding to float32 rounding of the
    gain graph: atol 1e-4 on the embedding), both are dog_bark, and both windows' "why" tags
    (AudioSet head scores) agree to 1e-3."""
    from edge_runtime.features import embed_audio
    from edge_runtime.loudness import active_power

    detector = Detector(class_model, provider="cpu")
    clip = sf.read(unseen(esc10_dir, "dog", 1)[0], dtype="float32")[0]
    level = 10 * np.log10(active_power(clip, RATE))
    at = {db: (clip * 10 ** ((db - level) / 20)).astype(np.float32) for db in (-30.0, -38.0)}
    (loud,), _ = embed_audio(detector.sessions, at[-30.0])
    (quiet,), _ = embed_audio(detector.sessions, at[-38.0])
    np.testing.assert_allclose(quiet, loud, rtol=0, atol=1e-4)
    # an event's "why" tags describe the window as it was heard, raised: the same for both
    tags = {db: detector.describe(audio) for db, audio in at.items()}
    assert [t for t, _ in tags[-38.0]] == [t for t, _ in tags[-30.0]], tags
    np.testing.assert_allclose([s for _, s in tags[-38.0]], [s for _, s in tags[-30.0]],
                               rtol=0, atol=1e-3)
    for db, audio in at.items():
        pred = detector.predict(audio)
        assert (pred.label, pred.danger_class) == ("danger", "dog_bark"), (db, pred.probability)


def test_a_gain_manifest_claiming_format_3_is_refused(class_model: Path, tmp_path: Path) -> None:
    """A runtime that knew format 3 would embed without the gain: such a claim is refused."""
    from edge_runtime.manifest import ManifestError

    model = tmp_path / "model"
    shutil.copytree(class_model, model)
    data = json.loads((model / "manifest.json").read_text())
    data["format_version"] = 3
    (model / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"streaming\.gain_max_db needs format_version 4"):
        load_manifest(model)


def test_glass_break_is_heard_zero_shot(class_model: Path, tmp_path: Path) -> None:
    """No breaking glass is in its training data: the class works from AudioSet evidence
    alone (a real ESC-50 glass clip, not in ESC-10)."""
    clip = shared_path("openworld", "audio", "esc50_capstone__1-84536-A-39.flac")
    records = run_daemon(class_model, clip, tmp_path / "events.jsonl")
    assert records and {r["class"] for r in records} == {"glass_break"}, records


def test_a_real_smoke_alarm_is_heard_by_a_class_trained_on_synthetic_ones(
        class_model: Path, tmp_path: Path) -> None:
    """No recorded alarm is in its training data, only training/synthetic_alarms.py's: a real
    smoke detector gives one smoke_alarm event."""
    clip = shared_path("openworld", "audio", "arm_smoke_detector_bsb0800.flac")
    records = run_daemon(class_model, clip, tmp_path / "events.jsonl")
    assert records and {r["class"] for r in records} == {"smoke_alarm"}, records


def test_a_smoke_alarm_over_the_dishes_is_reported_from_its_onset(class_model: Path,
                                                                  tmp_path: Path) -> None:
    """A real smoke alarm (recorded from afar) mixed at its own level into a minute of real
    dish washing, from 30.5 s: its windows dip under the threshold now and then (0.41, 0.42
    between 0.50s), which used to break the 6 s persistence run every time — no event at all.
    One dip no longer breaks a run: one smoke_alarm event, dated where the alarm begins."""
    from edge_runtime.audio import load_file

    rate = 32000
    dishes, _ = load_file(shared_path("openworld", "audio",
                                      "speechcommands_bg__sc_bg_doing_the_dishes.flac"), rate)
    alarm, _ = load_file(shared_path("openworld", "audio", "arm_smoke_detector_bsb1153.flac"),
                         rate)
    at = int(30.5 * rate)
    mix = dishes.copy()
    n = min(alarm.size, mix.size - at)
    mix[at:at + n] += alarm[:n]
    sf.write(tmp_path / "kitchen.flac", np.clip(mix, -1.0, 1.0), rate)
    records = run_daemon(class_model, tmp_path / "kitchen.flac", tmp_path / "events.jsonl")
    smoke = [r for r in records if r["class"] == "smoke_alarm"]
    assert len(smoke) == 1, records
    assert 28.0 <= smoke[0]["offset_start_s"] <= 32.0, smoke


def test_cnn14_without_a_real_head_uses_trained_evidence_only(cnn14_model_dir: Path,
                                                              esc10_dir: Path,
                                                              tmp_path: Path) -> None:
    """Random-init Cnn14 (plumbing only, no quality claim): zero-shot classes are left out and
    the manifest says the model uses trained evidence alone; the detector still runs."""
    from training.build import build

    out = tmp_path / "cnn14_classes"
    shutil.copytree(cnn14_model_dir, out)
    build(esc10_dir, out, per_fold_limit=2, measure_offline=False, negatives=False, mixes=0)
    classes = load_manifest(out).classes
    assert classes.evidence == ("trained",)
    # smoke_alarm: trained on the synthetic alarms (the mapping's synthetic_alarm category)
    assert set(classes.names) == {"dog_bark", "baby_cry", "chainsaw", "smoke_alarm"}
    assert load_manifest(out).streaming.window_embedding == "chunked"
    pred = Detector(out, provider="cpu").predict(unseen(esc10_dir, "dog", 1)[0])
    assert 0.0 <= pred.probability <= 1.0
    assert pred.danger_class in (None, "dog_bark", "baby_cry", "chainsaw", "smoke_alarm")
