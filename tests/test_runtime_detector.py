"""Detector API and the streaming core, on the tiny hand-built model (loud = danger)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.audio import AudioError
from edge_runtime.detector import Detector
from edge_runtime.features import embed_audio
from tests.helpers import ended_events
from tests.runtime_model import SR, hiss, tone


@pytest.fixture(scope="module")
def detector(tiny_model: Path) -> Detector:
    return Detector(tiny_model, provider="cpu", threads=1)


def test_predict_arrays_and_files(detector: Detector, tmp_path: Path) -> None:
    safe = detector.predict(hiss(5.0))
    assert safe.label == "safe" and safe.probability < 0.01
    danger = detector.predict(np.concatenate([hiss(3.0), tone(2.0)]))
    assert danger.label == "danger" and danger.probability > 0.99
    assert danger.tags[0][0] == "Loud noise" and len(danger.tags) == 3
    sf.write(tmp_path / "x.wav", np.concatenate([hiss(3.0, sr=48000), tone(2.0, sr=48000)]),
             48000, subtype="PCM_16")
    from_file = detector.predict(tmp_path / "x.wav")
    assert from_file.label == "danger" and abs(from_file.duration_s - 5.0) < 1e-3
    stereo_int = (np.stack([tone(1.0), tone(1.0)], axis=1) * 32767).astype(np.int16)
    assert detector.predict(stereo_int, sample_rate=SR).label == "danger"
    with pytest.raises(AudioError, match="x.txt"):
        (tmp_path / "x.txt").write_text("no")
        detector.predict(tmp_path / "x.txt")


def test_threshold_override_and_manifest_threshold(tiny_model: Path) -> None:
    assert Detector(tiny_model).threshold == 0.5
    strict = Detector(tiny_model, threshold=0.999)
    assert strict.predict(tone(1.0)).label == "safe"


def test_streamed_windows_equal_training_features(detector: Detector) -> None:
    audio = np.concatenate([hiss(4.3), tone(2.2), hiss(3.9, seed=1)])
    reference, spans = embed_audio(detector.sessions, audio)
    stream = detector.stream()
    scores = []
    rng = np.random.default_rng(0)
    pos = 0
    while pos < audio.size:
        n = int(rng.integers(1, 20000))
        scores += stream.push(audio[pos : pos + n])
        pos += n
    scores += stream.finish()
    assert len(scores) == len(spans)
    np.testing.assert_allclose(np.stack([s.embedding for s in scores]), reference, atol=1e-5)
    assert [s.start_s for s in scores] == [float(a) for a, _ in spans]
    assert scores[-1].end_s == pytest.approx(audio.size / SR)


def test_short_stream_gets_one_padded_window(detector: Detector) -> None:
    stream = detector.stream()
    assert stream.push(tone(0.1)) == []
    (only,) = stream.finish()
    assert only.start_s == 0.0 and only.end_s == pytest.approx(0.1) and only.probability > 0.99


def test_acceptance_30s_stream_one_event_at_the_right_time(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    """Safe, safe, DANGER (10-15 s), safe ×3 → exactly one event starting at 10 s ± one hop."""
    clips = [hiss(5.0, seed=i) for i in range(6)]
    clips[2] = tone(5.0)
    sf.write(tmp_path / "stream.flac", np.concatenate(clips), SR)
    events = tmp_path / "events.jsonl"
    clips_dir = tmp_path / "clips"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                          "--input", str(tmp_path / "stream.flac"), "--events", str(events),
                          "--save-clips", str(clips_dir)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    (rec,) = ended_events(events)
    assert abs(rec["offset_start_s"] - 10.0) <= 1.0
    assert abs(rec["offset_end_s"] - 15.0) <= 1.0
    assert rec["source"].endswith("stream.flac") and len(rec["model_sha256"]) == 64
    assert rec["peak_probability"] >= rec["mean_probability"] > 0.5
    assert rec["start"].endswith("Z") and rec["tags"][0]["name"] == "Loud noise"
    clip, rate = sf.read(rec["clip"])
    assert rate == SR and abs(len(clip) / SR - (rec["duration_s"] + 2.0)) < 0.01
    assert not list(clips_dir.glob(".*"))  # no temporary leftovers
