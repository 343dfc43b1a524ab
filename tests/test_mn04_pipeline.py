"""mn04 end to end with the real weights: build on an ESC-10 subset, then the device path.

The classifier is trained on 2 clips per category and fold (60 clips); the Detector is then
asked about clips it never saw. Real pretrained weights make these meaningful assertions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_runtime.detector import Detector
from edge_runtime.manifest import load_manifest
from tests.helpers import ended_events, unseen_clips
from training.mapping import binary_mapping

LIMIT = 2


@pytest.fixture(scope="module")
def mn04_model(mn04_model_dir: Path) -> Path:
    """The session's mn04 build (conftest: LogReg, 2 clips per category and fold = LIMIT)."""
    return mn04_model_dir


def unseen(esc10_dir: Path, category: str, n: int = 3) -> list[Path]:
    """``n`` clips of ``category`` that the per-fold-limited build did not train on."""
    return unseen_clips(esc10_dir, binary_mapping(), category, LIMIT, n)


def test_manifest_names_mn04_and_a_classifier(mn04_model: Path) -> None:
    manifest = load_manifest(mn04_model)
    assert manifest.backbone.name == "mn04"
    assert manifest.backbone.embedding_dim == 384
    assert {"backbone", "pooling", "classifier"} <= set(manifest.files)
    # end_to_end.onnx is a workbench file: tracked apart from the device files
    assert "end_to_end" not in manifest.files
    assert (mn04_model / manifest.workbench["end_to_end"].path).is_file()
    assert (mn04_model / "classifier.onnx").is_file()
    assert manifest.classifier.kind == "logreg"
    assert 0.0 < manifest.classifier.threshold < 1.0
    assert manifest.classifier.trained_on["clips"] == 6 * 5 * LIMIT


def test_a_front_end_graph_needs_format_3(mn04_model: Path, tmp_path: Path) -> None:
    """backbone.onnx reads the front end's log-mel: a manifest listing frontend.onnx is written
    as format 3, which a version-2 runtime refuses; one claiming 2 is refused by this one."""
    import json
    import shutil

    from edge_runtime.manifest import ManifestError

    data = json.loads((mn04_model / "manifest.json").read_text())
    assert "frontend" in data["files"] and data["format_version"] == 3
    model = tmp_path / "model"
    shutil.copytree(mn04_model, model)
    data["format_version"] = 2
    (model / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"files\.frontend needs format_version 3"):
        load_manifest(model)


def test_detector_hears_unseen_dogs_as_danger_and_rain_as_safe(mn04_model: Path,
                                                              esc10_dir: Path) -> None:
    detector = Detector(mn04_model, provider="cpu")
    for path in unseen(esc10_dir, "dog"):
        pred = detector.predict(path)
        assert pred.label == "danger", f"{path.name}: p={pred.probability:.3f}"
        assert any(name in {"Dog", "Bark", "Animal", "Domestic animals, pets"}
                   for name, _ in pred.tags), pred.tags
    for path in unseen(esc10_dir, "rain"):
        pred = detector.predict(path)
        assert pred.label == "safe", f"{path.name}: p={pred.probability:.3f}"


def test_stream_eval_daemon_matches_training_pipeline(mn04_model: Path, esc10_dir: Path,
                                                      tmp_path: Path) -> None:
    from training.stream_eval import stream_eval

    report = stream_eval(mn04_model, esc10_dir, tmp_path, per_fold_limit=1)
    agree = report["agreement"]
    assert report["clips"] == 6 * 5
    assert agree["max_abs_diff_detector_vs_pipeline"] < 1e-4
    assert agree["decision_disagreements_at_threshold"] == 0
    assert agree["daemon_event_vs_detector_threshold_disagreements"] == 0
    assert report["daemon"]["clips_with_events"] > 0
    assert report["detector"]["roc_auc"] > 0.8
    assert (tmp_path / "stream_eval.json").is_file()
    assert (tmp_path / "stream_eval.md").read_text().startswith("Leave-one-fold-out")


def test_daemon_finds_one_danger_clip_in_a_30s_stream(mn04_model: Path, esc10_dir: Path,
                                                      tmp_path: Path) -> None:
    """Acceptance with real weights and clips the classifier never saw: safe, safe, DOG, safe,
    safe, safe (5 s each) → exactly one event, 10 s → 15 s within one hop (1 s)."""
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf

    rain, sea, clock = (unseen(esc10_dir, c, 2) for c in ("rain", "sea_waves", "clock_tick"))
    dog = unseen(esc10_dir, "dog", 1)
    parts = [rain[0], sea[0], dog[0], clock[0], rain[1], sea[1]]
    stream = np.concatenate([sf.read(p, dtype="float32")[0] for p in parts])
    assert stream.size == 30 * 32_000
    sf.write(tmp_path / "stream.flac", stream, 32_000)
    events = tmp_path / "events.jsonl"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(mn04_model),
                          "--input", str(tmp_path / "stream.flac"), "--events", str(events)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    records = ended_events(events)
    assert len(records) == 1, records
    (rec,) = records
    assert abs(rec["offset_start_s"] - 10.0) <= 1.0, rec
    assert abs(rec["offset_end_s"] - 15.0) <= 1.0, rec
    assert rec["model_sha256"] == Detector(mn04_model, provider="cpu").model_id
    # tags come from a whole-window pass over the peak window (Detector.describe)
    names = [t["name"] for t in rec["tags"]]
    assert {"Dog", "Bark", "Animal", "Domestic animals, pets"} & set(names), names


def test_chunk_decisions_catch_a_short_danger_sound(mn04_model: Path, esc10_dir: Path) -> None:
    """2 s of an unseen dog clip inside 10 s of unseen rain: the 5 s window dilutes it, the
    1 s chunks scored alone do not (Detector's default chunk decisions)."""
    import numpy as np
    import soundfile as sf

    detector = Detector(mn04_model, provider="cpu")
    window_only = Detector(mn04_model, provider="cpu", chunk_decisions=False)
    rain = np.concatenate([sf.read(p, dtype="float32")[0] for p in unseen(esc10_dir, "rain", 2)])
    for dog_path in unseen(esc10_dir, "dog", 3):
        dog = sf.read(dog_path, dtype="float32")[0]
        energy = np.convolve(dog**2, np.ones(3200), "same")
        start = int(np.clip(np.argmax(energy) - 32_000, 0, dog.size - 64_000))
        stream = rain.copy()
        stream[137_600:201_600] = dog[start : start + 64_000]  # 4.3 s → 6.3 s
        pred = detector.predict(stream)
        assert pred.label == "danger", (dog_path.name, pred.probability, pred.window_probability)
        assert pred.window_probability <= pred.probability
        assert window_only.predict(stream).probability == pytest.approx(pred.window_probability)
    safe = detector.predict(rain)
    assert safe.label == "safe", safe.probability
