"""``--privacy``: clips with speech are not kept, the event still is; real mn04 head."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.detector import Detector
from edge_runtime.privacy import PrivacyError, speech_guard
from tests.helpers import ended_events

RATE = 32_000


def espeak(path: Path, text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True,
                   capture_output=True)
    from edge_runtime.audio import load_file

    return load_file(path, RATE)[0]


def test_speech_guard_hears_speech_not_a_dog(mn04_class_model_dir: Path, esc10_dir: Path,
                                             tmp_path: Path) -> None:
    guard = speech_guard(Detector(mn04_class_model_dir, provider="cpu"))
    talk = espeak(tmp_path / "talk.wav", "Please call me back when you get home tonight.")
    dog = sf.read(sorted((esc10_dir / "audio").glob("*-A-0.flac"))[-1], dtype="float32")[0]
    assert guard(talk) >= 0.3
    assert guard(dog) < 0.3


def test_privacy_needs_a_head(trained_model_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "headless"
    shutil.copytree(trained_model_dir, model)
    import json

    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"].pop("head")
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PrivacyError, match="needs a model with an AudioSet head"):
        speech_guard(Detector(model, provider="cpu"))


def test_event_reported_but_clip_with_speech_not_kept(mn04_class_model_dir: Path,
                                                      esc10_dir: Path, tmp_path: Path) -> None:
    dog = sf.read(esc10_dir / "audio" / "5-208030-A-0.flac", dtype="float32")[0]  # loud barks
    talk = espeak(tmp_path / "talk.wav", "Oh no, the dog is barking again, can you hear it? "
                                          "Please take him outside for a walk right now.")
    talk = np.resize(talk, dog.size)
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "dog_and_talk.wav", np.clip(dog + 0.4 * talk, -1, 1), RATE)
    results = {}
    for privacy in (False, True):
        clips, events = tmp_path / f"clips{privacy}", tmp_path / f"events{privacy}.jsonl"
        args = [sys.executable, "-m", "edge_runtime.cli", "--model", str(mn04_class_model_dir),
                "--input", str(folder), "--once", "--settle", "0", "--events", str(events),
                "--save-clips", str(clips), "-q"] + (["--privacy"] if privacy else [])
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        results[privacy] = (ended_events(events), sorted(clips.glob("*.flac")))
    events_off, clips_off = results[False]
    events_on, clips_on = results[True]
    assert events_off and len(events_on) == len(events_off)  # the event is still reported
    assert clips_off  # without --privacy the clip is kept
    assert clips_on == [] and all("clip" not in e for e in events_on)
