"""``attach_classifier``: the one way the workbench puts a classifier into a model dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from edge_runtime.detector import Detector
from edge_runtime.manifest import ClassifierSpec, ClassSpec, load_manifest
from tests.runtime_model import build_tiny_model, hiss, tone
from training.attach import attach_classifier
from training.onnx_classifier import CLASSIFIER_OUTPUT, to_onnx


def loud_vs_quiet() -> Pipeline:
    x = np.array([[-12.0], [-11.0], [-10.0], [-3.0], [-2.0], [-1.0]], np.float32)
    return Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(
        x, [0, 0, 0, 1, 1, 1])


def test_attach_to_a_new_folder_links_the_base_files(tmp_path: Path) -> None:
    base = build_tiny_model(tmp_path / "base")
    spec = ClassifierSpec("logreg", threshold=0.5, output=CLASSIFIER_OUTPUT)
    manifest = attach_classifier(base, tmp_path / "fold", to_onnx(loud_vs_quiet(), 1), spec,
                                 roles=("backbone", "pooling"))
    assert set(manifest.files) == {"backbone", "pooling", "classifier"}
    assert (tmp_path / "fold" / "backbone.onnx").stat().st_ino == \
        (base / "backbone.onnx").stat().st_ino  # a hard link, not a copy or a symlink
    assert not (tmp_path / "fold" / "backbone.onnx").is_symlink()
    assert load_manifest(tmp_path / "fold") == manifest
    det = Detector(tmp_path / "fold", provider="cpu")
    assert det.predict(tone(3.0)).label == "danger" and det.predict(hiss(3.0)).label == "safe"
    assert load_manifest(base).classifier.kind != "logreg"  # the base is untouched


def test_attach_in_place_replaces_classifier_and_drops_stale_sections(tmp_path: Path) -> None:
    base = build_tiny_model(tmp_path / "base")
    old = load_manifest(base)
    classes = ClassSpec(("loud",), (0.5,), "class_scores", ("trained",), -55.0)
    shutil.copy(base / "head.onnx", base / "end_to_end.onnx")
    old = old.replace(classes=classes).with_file(base, "end_to_end", "end_to_end.onnx")
    old.write(base)
    spec = ClassifierSpec("logreg", threshold=0.4, output=CLASSIFIER_OUTPUT)
    manifest = attach_classifier(base, base, to_onnx(loud_vs_quiet(), 1), spec)
    assert manifest.classes is None and "end_to_end" not in manifest.files
    assert manifest.threshold == 0.4 and manifest.model_id() != old.model_id()
    assert {"head", "labels", "backbone", "pooling", "classifier"} == set(manifest.files)
