"""``edge-train place``: clips placed inside longer ambience at a measured SNR, reproducibly,
as a labelled folder that ``evaluate`` reads (real files, the real CLI)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from training.cli import main
from training.labelled import read_labelled
from training.negatives import RATE, active_power


def _write(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), RATE, subtype="FLOAT")


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    data = tmp_path / "clips"
    t = np.arange(2 * RATE) / RATE
    _write(data / "audio" / "beep.wav", 0.3 * np.sin(2 * np.pi * 1000 * t) * (t < 0.5))
    _write(data / "audio" / "hiss.wav", 0.05 * rng.standard_normal(3 * RATE))
    (data / "labels.csv").write_text("file,label,category,fold\nbeep.wav,danger,beep,1\n"
                                     "hiss.wav,safe,hiss,1\n", "utf-8")
    room = tmp_path / "room"
    _write(room / "long.wav", 0.01 * rng.standard_normal(30 * RATE))
    _write(room / "short.wav", 0.01 * rng.standard_normal(4 * RATE))  # too short: never used
    return data, room


def _place(data: Path, room: Path, out: Path, *extra: str) -> None:
    result = CliRunner().invoke(main, ["place", "--data", str(data), "--ambience", str(room),
                                       "--out", str(out), "--seconds", "10", *extra])
    assert result.exit_code == 0, result.output


def test_clips_sit_at_their_offset_at_the_requested_snr(folders: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    data, room = folders
    _place(data, room, tmp_path / "out", "--snr-db", "6")
    rows = list(csv.DictReader((tmp_path / "out" / "labels.csv").open()))
    assert [(r["label"], r["category"], r["fold"]) for r in rows] == [
        ("danger", "beep", ""), ("safe", "hiss", "")]
    long_room = sf.read(room / "long.wav", dtype="float32")[0]
    for row in rows:
        placed = sf.read(tmp_path / "out" / "audio" / row["file"], dtype="float64")[0]
        clip = sf.read(row["clip"], dtype="float64")[0]
        assert placed.size == 10 * RATE and row["ambience"].endswith("long.wav")
        start, begin = round(float(row["offset_s"]) * RATE), round(
            float(row["ambience_start_s"]) * RATE)
        assert float(row["offset_s"]) >= 1.0 and start + clip.size <= 9 * RATE
        bed = placed.copy()
        bed[start:start + clip.size] -= clip  # what is left is the scaled ambience stretch
        stretch = long_room[begin:begin + 10 * RATE].astype(np.float64)
        gain = np.sqrt(np.mean(bed ** 2) / np.mean(stretch ** 2))
        np.testing.assert_allclose(bed, gain * stretch, atol=1e-4)  # 24-bit FLAC rounding
        snr = 10 * np.log10(active_power(clip) / np.mean(bed ** 2))
        assert snr == pytest.approx(6.0, abs=0.05)
    assert {c.category for c in read_labelled(tmp_path / "out")} == {"beep", "hiss"}


def test_same_seed_same_files_other_seed_other_offsets(folders: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    data, room = folders
    digests = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        _place(data, room, tmp_path / name, "--seed", seed)
        digests.append(hashlib.sha256(b"".join(
            p.read_bytes() for p in sorted((tmp_path / name / "audio").iterdir()))).hexdigest())
    assert digests[0] == digests[1] != digests[2]


def test_no_ambience_long_enough_is_one_line(folders: tuple[Path, Path],
                                              tmp_path: Path) -> None:
    data, room = folders
    result = CliRunner().invoke(main, ["place", "--data", str(data), "--ambience", str(room),
                                       "--out", str(tmp_path / "o"), "--seconds", "40"])
    assert result.exit_code != 0
    assert "no safe recording is 40 s long or longer" in result.output
    assert "Traceback" not in result.output
