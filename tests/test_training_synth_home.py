"""``edge-train synth-home``: long synthetic home audio for false events per hour.

Generated through the real CLI (in-process and as a subprocess), read back by the readers of
``edge-train build --extra`` and ``edge-train evaluate``, and replayed through the daemon's path
with the tiny energy model.
"""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from training.cli import main
from training.extra import read_extra
from training.household import (
    CATEGORY,
    HOME_SENTENCES,
    LEVELS,
    MORE_SENTENCES,
    SCENES,
    Voices,
    file_name,
    home_blocks,
    timeline_path,
)
from training.labelled import read_labelled
from training.mapping import default_mapping
from training.negatives import RATE, SPEECH
from training.openworld_eval import evaluate_openworld

ARGS = ["--minutes", "1.5", "--file-minutes", "1", "--seed", "1"]
NAMES = [file_name(1, 0, 60 * RATE), file_name(1, 1, 30 * RATE)]


def synth(out: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["synth-home", "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


def digest(folder: Path) -> dict[str, str]:
    """sha256 of labels.csv and of every audio file."""
    files = [folder / "labels.csv", *sorted((folder / "audio").iterdir())]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "home"
    synth(out, *ARGS)
    return out


def test_labels_csv_is_read_by_build_and_evaluate(home: Path) -> None:
    with open(home / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == NAMES
    assert [r["duration_s"] for r in rows] == ["60.000", "30.000"]
    assert {(r["label"], r["category"], r["fold"]) for r in rows} == {("safe", CATEGORY, "")}
    assert all(r["source"].startswith("synthetic: edge-train synth-home --seed 1 (numpy")
               for r in rows)
    extra = read_extra(home, default_mapping())
    assert [(c.path.name, c.label, c.category, c.group) for c in extra] == \
        [(n, 0, CATEGORY, "home:foldnone") for n in NAMES]
    clips = read_labelled(home, "none")
    assert [(c.path.name, c.label, c.fold) for c in clips] == [(n, "safe", None) for n in NAMES]
    for clip, seconds in zip(clips, (60, 30), strict=True):
        info = sf.info(str(clip.path))
        assert (info.format, info.samplerate, info.channels) == ("FLAC", RATE, 1)
        assert info.frames == seconds * RATE
    assert not [p for p in home.rglob(".*")]  # atomic writes leave no temporaries


def test_timeline_says_what_is_where(home: Path) -> None:
    for name, seconds in zip(NAMES, (60, 30), strict=True):
        with open(timeline_path(home, name), newline="", encoding="utf-8") as handle:
            rows = [(float(r["start_s"]), float(r["end_s"]), r["layer"], r["kind"])
                    for r in csv.DictReader(handle)]
        scenes = [r for r in rows if r[2] == "scene"]
        assert scenes[0][0] == 0.0 and scenes[-1][1] == seconds
        assert all(a[1] == b[0] for a, b in zip(scenes, scenes[1:], strict=False))
        assert {r[3] for r in scenes} <= set(SCENES)
        for start, end, _, kind in (r for r in rows if r[2] == "event"):
            assert kind in LEVELS and 0 <= start < end <= seconds


def test_audio_levels_are_those_of_a_quiet_home(home: Path) -> None:
    audio = np.concatenate([sf.read(home / "audio" / n, dtype="float64")[0] for n in NAMES])
    assert np.abs(audio).max() <= 1.0
    assert np.mean(np.abs(audio) > 0.99) < 1e-5  # hardly ever at full scale
    db = 10 * np.log10(np.mean(audio.reshape(-1, RATE) ** 2, axis=1))  # per second
    assert -80 < db.min() < -40  # a room-noise floor, never digital silence
    assert -50 < np.median(db) < -15
    assert db.max() < -6 and 20 * np.log10(np.abs(audio).max()) > -30


def test_same_seed_same_bytes_other_seed_other_audio(home: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    done = subprocess.run([sys.executable, "-m", "training.cli", "synth-home", "--out",
                           str(again), *ARGS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert digest(again) == digest(home)
    other = tmp_path / "other"
    synth(other, "--minutes", "1", "--file-minutes", "1", "--seed", "2")
    (name,) = [p.name for p in (other / "audio").iterdir()]
    assert name == file_name(2, 0, 60 * RATE)
    a, _ = sf.read(home / "audio" / NAMES[0])
    b, _ = sf.read(other / "audio" / name)
    assert a.shape == b.shape and not np.allclose(a, b)


def test_rerun_reuses_files_and_a_longer_run_extends(home: Path, tmp_path: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in (home / "audio").iterdir()}
    digests = digest(home)
    assert "0 written, 2 reused" in synth(home, *ARGS)
    assert {p.name: p.stat().st_mtime_ns for p in (home / "audio").iterdir()} == before
    assert digest(home) == digests
    longer = tmp_path / "longer"
    (longer / "audio").mkdir(parents=True)
    for made in (home / "audio" / NAMES[0], timeline_path(home, NAMES[0])):
        copy = longer / made.relative_to(home)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(made.read_bytes())
    assert "1 written, 1 reused" in synth(longer, "--minutes", "2", "--file-minutes", "1",
                                         "--seed", "1")
    with open(longer / "labels.csv", newline="", encoding="utf-8") as handle:
        assert [r["file"] for r in csv.DictReader(handle)] == [NAMES[0], file_name(1, 1,
                                                                                   60 * RATE)]


def test_a_cut_file_is_made_again(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "cut"
    (out / "audio").mkdir(parents=True)
    audio, _ = sf.read(home / "audio" / NAMES[1], dtype="float32")
    sf.write(out / "audio" / NAMES[1], audio[:RATE], RATE, format="FLAC", subtype="PCM_24")
    synth(out, *ARGS)
    assert digest(out) == digest(home)


@pytest.mark.parametrize(("args", "named"), [
    (["--minutes", "0"], "--minutes"),
    (["--minutes", "-3"], "--minutes"),
    (["--minutes", "nan"], "--minutes"),
    (["--minutes", "0.001"], "--minutes"),
    (["--file-minutes", "0"], "--file-minutes"),
    (["--file-minutes", "-1"], "--file-minutes"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, args: list[str], named: str) -> None:
    result = CliRunner().invoke(main, ["synth-home", "--out", str(tmp_path / "x"), *args])
    assert result.exit_code == 2
    assert result.output.startswith("edge-train: error:") and named in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_out_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    result = CliRunner().invoke(main, ["synth-home", "--out", str(target), "--minutes", "1"])
    assert result.exit_code == 2
    assert result.output.strip() == f"edge-train: error: --out {target}: is a file, not a folder"
    assert target.read_text() == "x"


def test_blocks_are_scenes_and_sum_to_the_file() -> None:
    """Memory is one scene at a time (≤ 2 min), not the file; no espeak-ng: no speech."""
    samples = 150 * RATE + 123
    blocks = [block for block, _ in home_blocks(5, 0, samples, Voices())]
    assert sum(b.size for b in blocks) == samples and len(blocks) > 3
    assert max(b.size for b in blocks) <= 120 * RATE
    again = np.concatenate([block for block, _ in home_blocks(5, 0, samples, Voices())])
    assert np.array_equal(np.concatenate(blocks), again)


def test_evaluation_speech_is_not_the_training_speech() -> None:
    training = {text for _, text in SPEECH}
    assert not training & {text for _, text in HOME_SENTENCES + MORE_SENTENCES}
    assert abs(sum(SCENES.values()) - 1.0) < 1e-9


def test_evaluate_replays_it_as_long_safe_audio(tiny_model: Path, home: Path,
                                                tmp_path: Path) -> None:
    report = evaluate_openworld(tiny_model, [home], tmp_path / "r", fold="none")
    assert report["clips"] == {"safe": 2} and report["unreadable"] == 0
    assert report["long_safe_files"] == 2
    assert report["long_safe_hours"] == pytest.approx(90 / 3600, abs=1e-4)
    assert report["evaluated"][0]["fold"] == "none"
