"""``edge-train evaluate``: labelled folders replayed through the daemon's Runner.

The tiny hand-built model (``tests/runtime_model.py``: loud = danger, quiet = safe) makes the
ground truth exact: a loud tone is flagged, quiet hiss is not, a long quiet file with two loud
bursts gives two false events. The report is checked against ``edge-detect --once --events``
run as a subprocess on the same files.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from edge_runtime.atomic import link_or_copy, write_json
from tests.helpers import shared_path
from tests.runtime_model import SR, hiss, tiny_manifest, tone
from training.cli import main
from training.labelled import LabelledClip, read_labelled, read_safe_audio
from training.openworld_eval import (
    evaluate_openworld,
    expected_classes,
    overlap_warning,
    summarise,
    trained_clips,
    training_overlap,
)
from training.replay import FileRun


def long_safe(seconds: float = 60.0) -> np.ndarray:
    """Quiet hiss with two loud 3 s bursts far apart (two events for the tiny model)."""
    audio = hiss(seconds, seed=1)
    for at in (10.0, 40.0):
        i = int(at * SR)
        audio[i:i + 3 * SR] += tone(3.0)
    return audio


def write_labelled(root: Path, rows: list[tuple[str, np.ndarray, str, str, str]],
                   audio_dir: bool = True) -> Path:
    """``rows``: (file, audio, label, category, fold) → labels.csv + audio files."""
    folder = root / "audio" if audio_dir else root
    folder.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "category", "fold", "source"])
        for name, audio, label, category, fold in rows:
            sf.write(folder / name, audio, SR)
            writer.writerow([name, label, category, fold, "test"])
    return root


@pytest.fixture()
def labelled(tmp_path: Path) -> Path:
    return write_labelled(tmp_path / "data", [
        ("alarm.wav", tone(5.0), "danger", "siren", "1"),
        ("quiet.wav", hiss(5.0), "safe", "rain", "1"),
        ("street.flac", long_safe(), "safe", "city_street", "1"),
        ("horn.wav", tone(4.0, amp=0.8), "ambiguous", "car_horn", "1"),
        ("other_fold.wav", tone(5.0), "danger", "siren", "2"),
    ])


def test_report_numbers_match_the_known_truth_and_files_are_written(
        tiny_model: Path, labelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = evaluate_openworld(tiny_model, [labelled], out, fold=1)
    assert report["clips"] == {"danger": 1, "safe": 2, "ambiguous": 1}
    assert report["danger_recall"] == 1.0
    assert report["safe_false_alarm_rate"] == 0.5  # the street file has two loud bursts
    assert report["balanced_accuracy"] == pytest.approx(0.75)
    assert report["long_safe_files"] == 1 and report["long_safe_events"] == 2
    assert report["false_events_per_hour_long"] == pytest.approx(2 / (60 / 3600), rel=1e-3)
    assert report["safe_events"] == 2
    rows = {r["category"]: r for r in report["per_category"]}
    assert (rows["siren"]["clips"], rows["siren"]["flagged"], rows["siren"]["rate"]) == (1, 1, 1.0)
    assert rows["rain"]["flagged"] == 0 and rows["city_street"]["events"] == 2
    assert rows["car_horn"]["label"] == "ambiguous" and rows["car_horn"]["flagged"] == 1
    assert "confusion" not in report  # a binary model has no classes
    for suffix in ("json", "md", "png"):
        assert (out / f"openworld_eval.{suffix}").stat().st_size > 0
    saved = json.loads((out / "openworld_eval.json").read_text())
    assert saved["danger_recall"] == 1.0 and saved["evaluated"][0]["fold"] == 1
    assert "| siren | danger | 1 | 1 |" in (out / "openworld_eval.md").read_text()
    assert not list(out.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_flagged_files_are_exactly_those_edge_detect_reports(tiny_model: Path, labelled: Path,
                                                             tmp_path: Path) -> None:
    report = evaluate_openworld(tiny_model, [labelled], tmp_path / "r")
    events = tmp_path / "events.jsonl"
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                           "--input", str(labelled / "audio"), "--once", "--settle", "0",
                           "--events", str(events), "-q"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    daemon: dict[str, int] = {}
    for record in map(json.loads, events.read_text().splitlines()):
        if record["state"] == "end":
            name = Path(record["source"]).name
            daemon[name] = daemon.get(name, 0) + 1
    ours = {Path(f["file"]).name: f["events"] for f in report["per_file"] if f["events"]}
    assert ours == daemon
    assert len(report["per_file"]) == 5  # no --fold: both folds


def test_cli_warns_when_the_model_trained_on_the_evaluated_fold(tiny_model: Path,
                                                               labelled: Path,
                                                               tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model.iterdir():
        link_or_copy(f, model / f.name)  # a model dir's files lie inside it (no symlinks out)
    manifest = json.loads((tiny_model / "manifest.json").read_text())
    manifest["classifier"]["trained_on"] = {"data": str(labelled), "held_out_fold": 2}
    (model / "manifest.json").unlink()
    write_json(model / "manifest.json", manifest)
    base = [sys.executable, "-m", "training.cli", "evaluate", "--model", str(model),
            "--data", str(labelled), "--out", str(tmp_path / "out")]
    seen = subprocess.run([*base, "--fold", "1"], capture_output=True, text=True, timeout=300)
    assert seen.returncode == 0, seen.stderr
    warning = [ln for ln in seen.stderr.splitlines() if "not held-out" in ln]
    assert len(warning) == 1 and "fold 1: 4 of 4 files" in warning[0]
    assert "| danger recall |" in seen.stdout
    report = json.loads((tmp_path / "out" / "openworld_eval.json").read_text())
    assert report["trained_on"]["classifier"]["data"] == str(labelled)
    assert report["evaluated"][0]["training_clips"] == 4
    held = subprocess.run([*base, "--fold", "2"], capture_output=True, text=True, timeout=300)
    assert held.returncode == 0, held.stderr
    assert "not held-out" not in held.stderr
    bad = subprocess.run([*base[:-2], "--data", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "neither labels.csv" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_fold_none_evaluates_only_the_rows_without_a_fold(tiny_model: Path,
                                                               tmp_path: Path) -> None:
    data = write_labelled(tmp_path / "data", [
        ("alarm.wav", tone(5.0), "danger", "siren", ""),
        ("quiet.wav", hiss(5.0), "safe", "rain", ""),
        ("folded.wav", tone(5.0), "danger", "siren", "1"),
    ])
    runner = CliRunner()
    base = ["evaluate", "--model", str(tiny_model), "--data", str(data)]
    for fold, files in (("none", ["alarm.wav", "quiet.wav"]), ("1", ["folded.wav"])):
        out = tmp_path / f"out-{fold}"
        result = runner.invoke(main, [*base, "--fold", fold, "--out", str(out)])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "openworld_eval.json").read_text())
        assert sorted(Path(f["file"]).name for f in report["per_file"]) == files
        assert report["evaluated"][0]["fold"] == (fold if fold == "none" else int(fold))
    assert report["danger_recall"] == 1.0
    bad = runner.invoke(main, [*base, "--fold", "three", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert bad.output.strip() == "edge-train: error: fold 'three' is neither a number nor 'none'"


def test_training_overlap_reads_extra_folders_and_folds(tmp_path: Path) -> None:
    esc, extra, other = tmp_path / "esc", tmp_path / "ow", tmp_path / "other"
    manifest = tiny_manifest(trained_on={"data": str(esc),
                                         "extra": [{"data": str(extra), "folds": [1]}]})
    assert training_overlap(manifest, esc, 3)
    assert training_overlap(manifest, extra, 1)
    assert training_overlap(manifest, extra, 3) is None
    assert training_overlap(manifest, extra, None)
    assert training_overlap(manifest, other, None) is None
    assert training_overlap(tiny_manifest(), esc, None) is None
    # edge-train build --extra records folder names and the held-out folds of the extras
    named = tiny_manifest(trained_on={"data": "esc", "extras": ["ow"],
                                      "held_out_folds": ["3", "none"]})
    assert training_overlap(named, extra, 3) is None
    assert training_overlap(named, extra, 1)
    assert training_overlap(named, esc, 3)  # the ESC-50 data trained on every fold
    assert training_overlap(named, other, 3) is None
    fold_model = tiny_manifest(trained_on={"data": str(esc), "held_out_fold": 2})
    assert training_overlap(fold_model, esc, 2) is None and training_overlap(fold_model, esc, 1)
    # per file, links followed: a folder of links into a training folder is training data
    (extra / "audio").mkdir(parents=True)
    links = tmp_path / "links"
    links.mkdir()
    clips = []
    for name, fold in (("a.wav", 3), ("b.wav", 1), ("c.wav", None)):
        (extra / "audio" / name).write_bytes(b"x")
        (links / name).symlink_to(extra / "audio" / name)
        clips.append(LabelledClip(links / name, "safe", "rain", fold, links))
    assert [c.path.name for c in trained_clips(named, clips)] == ["b.wav"]
    assert overlap_warning(named, clips, "ambience").startswith("ambience: 1 of 3 files")
    assert overlap_warning(named, clips[:1], "x") is None


def test_labelled_layouts(tmp_path: Path) -> None:
    flat = write_labelled(tmp_path / "flat", [("a.flac", hiss(1.0), "safe", "rain", ""),
                                              ("b.flac", tone(1.0), "danger", "dog_bark", "3")],
                          audio_dir=False)
    clips = read_labelled(flat)
    assert [(c.path.name, c.label, c.fold) for c in clips] == [("a.flac", "safe", None),
                                                               ("b.flac", "danger", 3)]
    assert [c.path.name for c in read_labelled(flat, fold=3)] == ["b.flac"]
    with pytest.raises(ValueError, match="no clips in fold 7"):
        read_labelled(flat, fold=7)
    assert [c.path.name for c in read_labelled(flat, fold="none")] == ["a.flac"]
    assert [c.path.name for c in read_labelled(flat, fold=" None ")] == ["a.flac"]
    assert [c.path.name for c in read_labelled(flat, fold="3")] == ["b.flac"]
    with pytest.raises(ValueError, match="fold 'x' is neither a number nor 'none'"):
        read_labelled(flat, fold="x")
    with pytest.raises(ValueError, match="no clips without a fold"):
        read_labelled(write_labelled(tmp_path / "folded", [("c.flac", hiss(1.0), "safe",
                                                             "rain", "2")]), fold="none")
    (flat / "labels.csv").write_text("file,label,category\na.flac,maybe,rain\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: label 'maybe'"):
        read_labelled(flat)
    plain = tmp_path / "plain" / "kitchen"
    plain.mkdir(parents=True)
    sf.write(plain / "one.wav", hiss(1.0), SR)
    (plain / ".hidden.wav").write_bytes(b"")
    (plain / "notes.txt").write_text("x")
    (ambience,) = read_safe_audio(tmp_path / "plain")
    assert ambience.path.name == "one.wav" and ambience.category == "kitchen"


def test_confusion_counts_event_classes_per_category() -> None:
    """Class models (manifest ``classes``): true category × class of the strongest event."""
    def run(category: str, label: str, *classes: tuple[str, float]) -> FileRun:
        clip = LabelledClip(Path(f"/x/{category}.wav"), label, category, None, Path("/x"))
        return FileRun(clip, 4.0, [{"class": c, "peak_probability": p} for c, p in classes])

    names = ["gunshot", "dog_bark", "siren"]
    runs = [run("gun_shot", "danger", ("gunshot", 0.9)),
            run("gun_shot", "danger", ("siren", 0.6), ("gunshot", 0.8)),
            run("gun_shot", "danger"),
            run("dog_bark", "danger", ("siren", 0.7)),
            run("street_music", "safe", ("siren", 0.9))]
    mapping = {"classes": {"gunshot": {"categories": ["gun_shot"]},
                           "dog_bark": {"categories": ["dog", "dog_bark"]},
                           "baby_cry": {"categories": ["crying_baby"]}}}
    manifest = tiny_manifest(mapping=mapping, classes=(names, [0.5] * len(names)))
    expected = expected_classes(["gun_shot", "dog_bark", "crying_baby"], manifest)
    assert expected == {"gun_shot": "gunshot", "dog_bark": "dog_bark"}  # no baby_cry class
    conf = summarise(runs, names, expected)["confusion"]
    matrix = dict(zip(conf["rows"], conf["matrix"], strict=True))
    assert conf["columns"] == [*names, "(none)"]
    assert matrix["gun_shot"] == [2, 0, 0, 1]
    assert matrix["dog_bark"] == [0, 0, 1, 0]
    assert matrix["street_music"] == [0, 0, 1, 0]
    assert conf["flagged_danger_with_expected_class"] == 3
    assert conf["class_correct_rate"] == pytest.approx(2 / 3)
    assert conf["all_events_class_correct_rate"] == pytest.approx(1 / 3)  # one had a siren too
    # without a mapping in the manifest: the packaged default mapping's class table
    assert expected_classes(["gun_shot", "dog_bark", "siren"],
                            tiny_manifest(classes=(names, [0.5] * len(names)))) \
        == {"gun_shot": "gunshot", "dog_bark": "dog_bark", "siren": "siren"}


def test_openworld_fold_through_the_daemon(tiny_model: Path, tmp_path: Path) -> None:
    """The real ../shared/openworld layout: every fold-3 row is replayed and counted."""
    root = shared_path("openworld")
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["fold"] == "3"]
    report = evaluate_openworld(tiny_model, [root], tmp_path, fold=3)
    truth = {lab: sum(r["label"] == lab for r in rows) for lab in ("danger", "safe", "ambiguous")}
    assert report["clips"] == {k: v for k, v in truth.items() if v}
    assert report["unreadable"] == 0
    flagged = sum(r["flagged"] for r in report["per_category"] if r["label"] == "danger")
    assert report["danger_recall"] == pytest.approx(flagged / truth["danger"])


def test_esc50_layout_uses_the_default_mapping() -> None:
    from training.mapping import default_mapping

    root = shared_path("esc10")
    mapping = default_mapping()
    clips = read_labelled(root, fold=1)
    assert {c.fold for c in clips} == {1}
    assert all(c.label == ("danger" if mapping.label(c.category) else "safe") for c in clips)
    by_category = {c.category: c.label for c in clips}
    assert by_category["dog"] == "danger" and by_category["rain"] == "safe"
    assert len(clips) == 8 * len(by_category)  # ESC-10: 8 clips per category and fold


def test_unreadable_file_is_named_and_not_counted(tiny_model: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = write_labelled(tmp_path / "data", [("alarm.wav", tone(5.0), "danger", "siren", ""),
                                              ("quiet.wav", hiss(5.0), "safe", "rain", "")])
    (data / "audio" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    with open(data / "labels.csv", "a", encoding="utf-8") as handle:
        handle.write("broken.wav,danger,siren,,test\n")
    report = evaluate_openworld(tiny_model, [data], tmp_path / "r")
    assert report["unreadable"] == 1 and report["clips"] == {"danger": 1, "safe": 1}
    assert report["danger_recall"] == 1.0  # the broken file is not a miss
    (bad,) = [f for f in report["per_file"] if f["error"]]
    assert bad["file"] == "audio/broken.wav" and "broken.wav" in bad["error"]
    assert "Unreadable files (1, not counted)" in report["markdown"]
    assert sum("broken.wav" in r.getMessage() for r in caplog.records
               if r.levelname == "ERROR") == 1
