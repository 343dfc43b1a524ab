"""``edge-train calibrate``: thresholds from a false-alarm budget, checked by the daemon itself.

The tiny hand-built model (loud = danger) turns each loud burst in quiet hiss into one false
event, with a p(danger) that grows with the burst's level; after calibration
``edge-detect --once --events`` on the same ambience must stay within the budget. Class-model
threshold search (``classes.thresholds``) is exercised on cached window scores.
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

from edge_runtime.detector import Detector
from tests.helpers import shared_path
from tests.runtime_model import SR, build_tiny_model, hiss, tiny_manifest, tone
from training.calibrate import Rule, calibrate, normalise, pick_thresholds, poisson_upper
from training.labelled import LabelledClip
from training.replay import FileRun, Trace

BURSTS = (0.2, 0.3, 0.5)  # amplitudes: p(danger) ≈ 0.90, 0.98, 0.997 for the tiny model


@pytest.fixture()
def tiny_model(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "model")


@pytest.fixture()
def ambience(tmp_path: Path) -> Path:
    """Three 20 s quiet recordings, each with one 1.5 s loud burst (one false event each)."""
    folder = tmp_path / "ambience" / "home"
    folder.mkdir(parents=True)
    for i, amp in enumerate(BURSTS):
        audio = hiss(20.0, seed=i)
        audio[8 * SR:int(9.5 * SR)] += tone(1.5, amp=amp)
        sf.write(folder / f"room{i}.flac", audio, SR)
    return folder.parent


@pytest.fixture()
def danger(tmp_path: Path) -> Path:
    root = tmp_path / "danger"
    (root / "audio").mkdir(parents=True)
    rows = [("soft.wav", tone(4.0, amp=0.25), "danger", "alarm", "1"),
            ("loud.wav", tone(4.0, amp=0.9), "danger", "alarm", "1"),
            ("calm.wav", hiss(4.0), "safe", "rain", "1"),
            ("trained.wav", tone(4.0, amp=0.25), "danger", "alarm", "2")]
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "category", "fold"])
        for name, audio, *rest in rows:
            sf.write(root / "audio" / name, audio, SR)
            writer.writerow([name, *rest])
    return root


def daemon_events(model: Path, folder: Path) -> list[dict]:
    """``edge-detect --input DIR --once --events`` on every audio file under ``folder``: the
    finished events (one ``end`` line each)."""
    events = folder.parent / f"{folder.name}.events.jsonl"
    events.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                           "--input", str(folder), "--once", "--settle", "0", "--events",
                           str(events), "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = events.read_text().splitlines() if events.exists() else []
    return [r for r in map(json.loads, lines) if r["state"] == "end"]


def test_budget_holds_on_the_daemon_after_calibration(tiny_model: Path, ambience: Path,
                                                      danger: Path, tmp_path: Path) -> None:
    home = ambience / "home"
    assert len(daemon_events(tiny_model, home)) == 3  # before: one event per burst
    before = json.loads((tiny_model / "manifest.json").read_text())
    report = calibrate(tiny_model, [ambience], budget_per_hour=0.5, danger=danger, fold=1,
                       out=tmp_path / "report")
    assert report["false_events_before"] == 3
    assert report["ambience_files"] == 3 and report["ambience_seconds"] == pytest.approx(60.0)
    assert report["false_events_after"] == 0 and report["budget_met"]
    assert report["measured_by"].startswith("daemon replay")
    assert daemon_events(tiny_model, home) == []  # the CLI, reading the updated manifest
    after = json.loads((tiny_model / "manifest.json").read_text())
    threshold = after["classifier"]["threshold"]
    loudest = Detector(tiny_model, provider="cpu").predict(home / "room2.flac").probability
    assert loudest < threshold < 1.0
    cal = after["classifier"].pop("calibration")
    before["classifier"].pop("threshold")
    after["classifier"].pop("threshold")
    assert after == before  # the rest of the manifest is kept
    assert cal["budget_per_hour"] == 0.5 and cal["ambience_files"] == 3
    assert cal["thresholds_before"] == {"danger": 0.5}
    assert cal["thresholds_after"] == {"danger": threshold}
    assert cal["false_events_per_hour_after"] == 0.0
    # what it costs: the soft danger clip (p below the loudest burst) is now missed
    d = cal["danger"]
    assert d["clips"] == 2 and d["fold"] == 1  # fold 2 and safe rows left out
    assert d["recall_before"] == 1.0 and d["recall_after"] == 0.5
    assert (tmp_path / "report" / "calibration.json").is_file()
    text = (tmp_path / "report" / "calibration.md").read_text()
    assert "| before | 3 |" in text
    # the id a deployment pins (--expect-model) changed with the manifest: the report says so
    new_id = Detector(tiny_model, provider="cpu").model_id
    assert report["model_id"]["after"] == new_id != report["model_id"]["before"]
    assert f"**{new_id}**" in text and "--expect-model" in text


def test_smallest_threshold_within_a_budget_of_one_event(tiny_model: Path,
                                                         ambience: Path) -> None:
    """60 s of ambience at 60 events/hour allows one event: the two softer bursts go."""
    home = ambience / "home"
    detector = Detector(tiny_model, provider="cpu")
    p = [detector.predict(home / f"room{i}.flac").probability for i in range(3)]
    assert p[0] < p[1] < p[2]
    report = calibrate(tiny_model, [home], budget_per_hour=60.0)
    threshold = report["thresholds_after"]["danger"]
    assert p[1] < threshold <= p[2]
    assert threshold - p[1] < 2e-6  # the smallest: just above the second-loudest burst
    (event,) = daemon_events(tiny_model, home)
    assert Path(event["source"]).name == "room2.flac"


def test_dry_run_keeps_the_manifest_and_cli_prints_the_table(tiny_model: Path,
                                                             ambience: Path,
                                                             tmp_path: Path) -> None:
    text = (tiny_model / "manifest.json").read_bytes()
    done = subprocess.run([sys.executable, "-m", "training.cli", "calibrate", "--model",
                           str(tiny_model), "--ambience", str(ambience), "--dry-run",
                           "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| danger | 0.5000 |" in done.stdout and "dry run" in done.stdout
    assert (tiny_model / "manifest.json").read_bytes() == text
    bad = subprocess.run([sys.executable, "-m", "training.cli", "calibrate", "--model",
                          str(tiny_model), "--ambience", str(tmp_path / "missing")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no such folder" in bad.stderr
    assert "Traceback" not in bad.stderr


def class_run(name: str, scores: np.ndarray, before: np.ndarray,
              gated: np.ndarray | None = None) -> FileRun:
    """A replayed file whose windows (1 s hop, 5 s long) carry these raw class scores."""
    n = len(scores)
    decision = normalise(scores, before).max(axis=1)
    if gated is not None:
        decision[gated] = 0.0
    start = np.maximum(np.arange(n) - 4.0, 0.0)
    clip = LabelledClip(Path(f"/x/{name}.wav"), "safe", "ambience", None, Path("/x"))
    trace = Trace(start, np.arange(n) + 1.0, decision, scores, float(n))
    return FileRun(clip, float(n), [], None, trace)


def test_class_thresholds_share_the_budget() -> None:
    rng = np.random.default_rng(0)
    names = ["smoke_alarm", "gunshot", "siren"]
    before = np.array([0.5, 0.5, 0.5])
    scores = rng.uniform(0.0, 0.3, size=(600, 3))  # 10 min of quiet
    for at, value in ((100, 0.6), (200, 0.7), (300, 0.8)):
        scores[at, 0] = value  # three smoke-alarm-like false alarms
    scores[400, 1] = 0.95  # one gunshot-like
    scores[500, 1] = 0.99  # ... and a window the runtime gated (too quiet): never an event
    gated = np.zeros(600, bool)
    gated[500] = True
    rule = Rule(tiny_manifest(classes=(names, before.tolist())), 0.5)
    files = [rule.prepare(class_run("a", scores, before, gated))]
    assert sum(rule.events(files, before, 1.0)) == 4
    hours = 600 / 3600
    t, per_class = pick_thresholds(rule, files, hours, 6.0, before.copy(), 1.0)  # 1 event total
    assert 0.8 < t[0] < 0.8 + 2e-6 and 0.95 < t[1] < 0.95 + 2e-6 and t[2] == 0.5
    assert sum(rule.events(files, t, 1.0)) == 0
    assert [c["own_events"] for c in per_class] == [0, 0, 0]
    # a 36/h budget allows 6 events: 2 per class, so the two softer smoke alarms stay out
    t, _ = pick_thresholds(rule, files, hours, 36.0, before.copy(), 1.0)
    assert 0.6 < t[0] <= 0.7 and t[1] == 0.5
    assert sum(rule.events(files, t, 1.0)) == 3  # 0.7 and 0.8 smoke alarms, 0.95 gunshot
    # allowed below the current thresholds: the quiet class goes down to just above its noise
    t, _ = pick_thresholds(rule, files, hours, 6.0, np.full(3, 0.05), 1.0)
    assert scores[:, 2].max() < t[2] < scores[:, 2].max() + 2e-6


def test_normalise_and_poisson_bound() -> None:
    t = np.array([0.2, 0.9])
    assert np.allclose(normalise(np.array([[0.2, 0.9]]), t), 0.5)
    assert np.allclose(normalise(np.array([[0.0, 1.0]]), t), [[0.0, 1.0]])
    assert np.allclose(normalise(np.array([[0.1, 0.95]]), t), [[0.25, 0.75]])
    assert poisson_upper(0, 1.0) == pytest.approx(2.996, abs=1e-3)  # the "rule of three"
    assert poisson_upper(0, 6.0) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow
def test_mn04_on_real_ambiences_and_held_out_fold(mn04_weights: Path, esc10_dir: Path,
                                                  tmp_path: Path) -> None:
    """Real weights (binary ESC-10 model), real long ambiences (../shared/openworld without a
    fold), the held-out UrbanSound8K fold 3 as danger: the daemon meets the budget after
    calibration, and ``edge-train evaluate`` measures the same recall calibrate reported."""
    from training.build import build
    from training.mapping import binary_mapping
    from training.openworld_eval import evaluate_openworld

    openworld = shared_path("openworld")
    model = tmp_path / "model"
    build(esc10_dir, model, str(mn04_weights), mapping=binary_mapping(), per_fold_limit=2,
          measure_offline=False)  # two lists, no classes: the seed's binary model
    amb = tmp_path / "ambience"
    amb.mkdir()
    with open(openworld / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["label"] == "safe" and not row["fold"]:
                (amb / row["file"]).symlink_to(openworld / "audio" / row["file"])
    report = calibrate(model, [amb], budget_per_hour=0.5, danger=openworld, fold=3)
    assert report["false_events_before"] > 0  # the ESC-10 model does alarm on real ambiences
    assert report["false_events_after"] <= 0.5 * report["ambience_seconds"] / 3600
    assert len(daemon_events(model, amb)) == report["false_events_after"]
    d = report["danger"]
    assert d["recall_after"] <= d["recall_before"]
    ev = evaluate_openworld(model, [openworld], tmp_path / "eval", fold=3)
    assert ev["danger_recall"] == pytest.approx(d["recall_after"])


def build_tiny_class_model(out: Path, thresholds: tuple[float, float] = (0.5, 0.5),
                           min_seconds: tuple[float, ...] = ()) -> Path:
    """The tiny model with two named classes on its log energy e: ``alarm`` =
    sigmoid(2 (e + 5)) (any loud sound) and ``bang`` = sigmoid(e + 1) (only very loud ones);
    ``min_seconds``: each class's persistence (none by default)."""
    from onnx import TensorProto, helper, numpy_helper

    from edge_runtime.manifest import ClassSpec, load_manifest
    from tests.runtime_model import _save

    build_tiny_model(out)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["embedding", "w", "b"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["class_scores"])],
        "tiny_classes",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("class_scores", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.array([[2.0, 1.0]], np.float32), "w"),
         numpy_helper.from_array(np.array([10.0, 1.0], np.float32), "b")])
    _save(graph, out / "classifier.onnx")
    manifest = load_manifest(out).with_file(out, "classifier", "classifier.onnx")
    manifest.replace(
        streaming=manifest.streaming.replace(chunk_decisions=False),
        classes=ClassSpec(("alarm", "bang"), thresholds, "class_scores", ("trained",), -120.0,
                          calibration={"method": "set by the build"}, min_seconds=min_seconds),
        classifier=manifest.classifier.replace(mapping={"classes": {
            "alarm": {"categories": ["alarm"]}, "bang": {"categories": ["bang"]}}}),
    ).write(out)
    return out


def test_class_model_calibration_and_evaluation_through_the_daemon(
        tmp_path: Path, ambience: Path, danger: Path) -> None:
    """With the runtime's named classes: per-class thresholds written to ``classes``, the
    daemon then within budget, and events carrying the right ``class``."""
    import dataclasses

    from edge_runtime.detector import WindowScore

    if "class_scores" not in {f.name for f in dataclasses.fields(WindowScore)}:
        pytest.skip("this runtime has no named danger classes yet (WindowScore.class_scores)")
    from training.openworld_eval import evaluate_openworld

    model = build_tiny_class_model(tmp_path / "classes")
    home = ambience / "home"
    assert len(daemon_events(model, home)) == 3
    report = calibrate(model, [ambience], budget_per_hour=0.5, danger=danger, fold=1)
    assert report["class_model"] and report["false_events_after"] == 0
    manifest = json.loads((model / "manifest.json").read_text())
    alarm, bang = manifest["classes"]["thresholds"]
    assert 0.99 < alarm < 1.0 and bang == 0.5  # bang never fired on the ambience
    cal = manifest["classes"]["calibration"]
    assert cal["thresholds_after"] == {"alarm": alarm, "bang": bang}
    assert cal["from_build"] == {"method": "set by the build"}  # kept, not lost
    assert daemon_events(model, home) == []
    assert report["danger"]["recall_before"] == 1.0 and report["danger"]["recall_after"] == 0.5
    ev = evaluate_openworld(model, [danger], tmp_path / "eval", fold=1)
    assert ev["classes"] == ["alarm", "bang"]
    assert ev["danger_recall"] == 0.5
    conf = ev["confusion"]
    assert conf["expected_class"] == {"alarm": "alarm"}
    assert conf["class_correct_rate"] == 1.0
    assert (tmp_path / "eval" / "openworld_eval.png").is_file()


def test_calibration_replays_class_persistence(tmp_path: Path, ambience: Path) -> None:
    """``alarm`` must last 6 s: the three 1.5 s bursts are held (no event), a 12 s tone is one
    event. The re-simulation must apply the same persistence to match the daemon (else it
    counts the bursts and refuses), and the budget then only has to rise above the long tone."""
    model = build_tiny_class_model(tmp_path / "classes", min_seconds=(6.0, 0.0))
    home = ambience / "home"
    audio = hiss(30.0, seed=7)
    audio[5 * SR:17 * SR] += tone(12.0, amp=0.3)  # alarm ≈ 0.978; the bursts reach 0.997
    sf.write(home / "long.flac", audio, SR)
    assert [Path(e["source"]).name for e in daemon_events(model, home)] == ["long.flac"]
    report = calibrate(model, [ambience], budget_per_hour=0.5)
    assert report["false_events_before"] == 1 and report["false_events_after"] == 0
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["classes"]["min_seconds"] == [6.0, 0.0]  # kept with the new thresholds
    alarm, bang = manifest["classes"]["thresholds"]
    assert 0.97 < alarm < 0.99 and bang == 0.5
    assert daemon_events(model, home) == []


def test_min_threshold_lets_thresholds_down_but_raises_none(tmp_path: Path) -> None:
    """``--min-threshold 0.5`` on quiet rooms: alarm (0.995) may come down to 0.5; bang,
    already at 0.3, is not raised to it."""
    rooms = tmp_path / "amb" / "home"
    rooms.mkdir(parents=True)
    for i in range(2):
        sf.write(rooms / f"room{i}.flac", hiss(20.0, seed=i), SR)
    model = build_tiny_class_model(tmp_path / "m", (0.995, 0.3))
    report = calibrate(model, [rooms.parent], min_threshold=0.5, write=False,
                       out=tmp_path / "report")
    assert report["thresholds_before"] == {"alarm": 0.995, "bang": 0.3}
    assert report["thresholds_after"]["alarm"] == pytest.approx(0.5)
    assert report["thresholds_after"]["bang"] == pytest.approx(0.3)
    assert "after" not in report["model_id"]  # a dry run changes no id
    only = calibrate(model, [rooms.parent], min_threshold=0.2, lower=("alarm",), write=False,
                     out=tmp_path / "report")
    assert only["thresholds_after"]["alarm"] == pytest.approx(0.2)
    assert only["thresholds_after"]["bang"] == pytest.approx(0.3)  # not lowered to 0.2
    with pytest.raises(ValueError, match="--lower siren: not a class of this model"):
        calibrate(model, [rooms.parent], min_threshold=0.2, lower=("siren",), write=False,
                  out=tmp_path / "report")

