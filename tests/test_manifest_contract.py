"""The model dir contract as a boundary: tampered model dirs are refused in one line naming the
field, paths stay inside the model dir, and any edit of the manifest changes the model id.

Every case starts from a fresh copy of the tiny model dir (``tests/runtime_model.py``) and
edits one thing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    file_entry,
    load_manifest,
    sha256_file,
)
from edge_runtime.scoring import Scorer, ScoringError
from edge_runtime.sessions import load_sessions, run1
from tests.runtime_model import build_tiny_model, tone

Edit = Callable[[Path, dict[str, Any]], None]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny_contract"))


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def read(model: Path) -> dict[str, Any]:
    return json.loads((model / MANIFEST_NAME).read_text())


def write(model: Path, data: Any) -> None:
    (model / MANIFEST_NAME).write_text(json.dumps(data))


def refresh(model: Path, data: dict[str, Any], role: str) -> None:
    """Update ``role``'s sha256 and size to the file now on disk (a consistent forgery)."""
    data["files"][role] |= file_entry(model, data["files"][role]["path"]).to_dict()


def setter(dotted: str, value: Any) -> Edit:
    def edit(_model: Path, data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[last] = value
    return edit


def deleter(dotted: str) -> Edit:
    def edit(_model: Path, data: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        del node[last]
    return edit


def replace_file(role: str, content: bytes) -> Edit:
    def edit(model: Path, data: dict[str, Any]) -> None:
        (model / data["files"][role]["path"]).write_bytes(content)
        refresh(model, data, role)
    return edit


def head_only_classifier() -> bytes:
    """A classifier graph whose one input is the head's output (no embedding)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["audioset_probs", "axis1"], ["m"], keepdims=1),
         helper.make_node("Concat", ["m", "m"], ["probabilities"], axis=1)],
        "head_only",
        [helper.make_tensor_value_info("audioset_probs", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=9).SerializeToString()


def classifier_reading(second: str, width: int = 3) -> bytes:
    """A classifier graph with a second input ``second`` (``width`` wide) beside the embedding
    (a class model reads the head's output there)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMax", [second, "axis1"], ["m"], keepdims=1),
         helper.make_node("ReduceMax", ["embedding", "axis1"], ["e"], keepdims=1),
         helper.make_node("Concat", ["e", "m"], ["probabilities"], axis=1)],
        "two_inputs",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info(second, TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("axis1", TensorProto.INT64, [1], [1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=9).SerializeToString()


def without_head(edit: Edit) -> Edit:
    def both(model: Path, data: dict[str, Any]) -> None:
        edit(model, data)
        del data["files"]["head"]
    return both


def labels_symlink_outside(model: Path, data: dict[str, Any]) -> None:
    outside = model.parent / f"{model.name}-secret.txt"
    outside.write_text("root:x:0:0\n")
    (model / "labels.txt").unlink()
    os.symlink(outside, model / "labels.txt")
    refresh(model, data, "labels")


def labels_path_absolute(model: Path, data: dict[str, Any]) -> None:
    outside = model.parent / f"{model.name}-abs.txt"
    outside.write_text("root:x:0:0\n")
    data["files"]["labels"] = file_entry(model.parent, outside.name).to_dict()
    data["files"]["labels"]["path"] = str(outside)


def labels_path_parent(model: Path, data: dict[str, Any]) -> None:
    outside = model.parent / f"{model.name}-up.txt"
    outside.write_text("root:x:0:0\n")
    data["files"]["labels"] = file_entry(model.parent, outside.name).to_dict()
    data["files"]["labels"]["path"] = f"../{outside.name}"


def data_file_altered(model: Path, data: dict[str, Any]) -> None:
    """External weights beside the backbone (role backbone_data), changed after listing."""
    (model / "backbone.onnx.data").write_bytes(b"weights" * 100)
    data["files"]["backbone_data"] = file_entry(model, "backbone.onnx.data").to_dict()
    (model / "backbone.onnx.data").write_bytes(b"WEIGHTS" * 100)


def workbench(path: Any) -> Edit:
    def edit(_model: Path, data: dict[str, Any]) -> None:
        data["workbench"] = {"end_to_end": {"path": path, "sha256": "0" * 64, "bytes": 0}}
    return edit


def classes(**changes: Any) -> Edit:
    def edit(_model: Path, data: dict[str, Any]) -> None:
        data["classes"] = {"names": ["smoke_alarm", "glass_break"], "output": "class_scores",
                           "thresholds": [0.4, 0.6], "evidence": ["trained"],
                           "level_gate_dbfs": -55.0, **changes}
    return edit


def streaming(**changes: Any) -> Edit:
    def edit(_model: Path, data: dict[str, Any]) -> None:
        data["streaming"] |= changes
    return edit


def gain_over_the_waveform(model: Path, data: dict[str, Any]) -> None:
    """A gain graph listed, but the backbone reads the waveform: nothing to raise."""
    shutil.copy(model / data["files"]["pooling"]["path"], model / "gain.onnx")
    data["files"]["gain"] = file_entry(model, "gain.onnx").to_dict()
    data["streaming"] |= {"window_embedding": "whole", "gain_max_db": 10}


def whole(value: Any) -> Edit:
    def edit(model: Path, _data: dict[str, Any]) -> None:
        write(model, value)
        raise StopIteration  # the manifest is written already
    return edit


def raw_text(text: str) -> Edit:
    def edit(model: Path, _data: dict[str, Any]) -> None:
        (model / MANIFEST_NAME).write_text(text)
        raise StopIteration
    return edit


# (id, edit, a fragment the one-line error must contain)
TAMPERED: list[tuple[str, Edit, str]] = [
    ("threshold-1.5", setter("classifier.threshold", 1.5), "classifier.threshold"),
    ("threshold-0", setter("classifier.threshold", 0), "classifier.threshold"),
    ("threshold-1", setter("classifier.threshold", 1.0), "classifier.threshold"),
    ("threshold-nan", setter("classifier.threshold", math.nan), "classifier.threshold"),
    ("threshold-inf", setter("classifier.threshold", math.inf), "classifier.threshold"),
    ("threshold-string", setter("classifier.threshold", "high"), "classifier.threshold"),
    ("threshold-list", setter("classifier.threshold", [0.5]), "classifier.threshold"),
    ("sample-rate-0", setter("input.sample_rate", 0), "input.sample_rate"),
    ("sample-rate-negative", setter("input.sample_rate", -32000), "input.sample_rate"),
    ("sample-rate-huge", setter("input.sample_rate", 10**9), "input.sample_rate"),
    ("sample-rate-float", setter("input.sample_rate", 32000.5), "input.sample_rate"),
    ("sample-rate-bool", setter("input.sample_rate", True), "input.sample_rate"),
    ("sample-rate-string", setter("input.sample_rate", "32000"), "input.sample_rate"),
    ("min-samples-0", setter("input.min_samples", 0), "input.min_samples"),
    ("chunk-samples-1e9", setter("streaming.chunk_samples", 10**9), "streaming.chunk_samples"),
    ("chunk-samples-0", setter("streaming.chunk_samples", 0), "streaming.chunk_samples"),
    ("chunk-samples-float", setter("streaming.chunk_samples", 1e9), "streaming.chunk_samples"),
    ("window-chunks-0", setter("streaming.window_chunks", 0), "streaming.window_chunks"),
    ("window-chunks-huge", setter("streaming.window_chunks", 10**6),
     "streaming.window_chunks"),
    ("window-too-long", setter("streaming.chunk_samples", 32000 * 29),
     "streaming.window_chunks"),
    ("frame-dim-0", setter("backbone.frame_dim", 0), "backbone.frame_dim"),
    ("backbone-name-missing", deleter("backbone.name"), "backbone.name"),
    ("input-missing", deleter("input"), "input"),
    ("streaming-null", setter("streaming", None), "streaming"),
    ("streaming-list", setter("streaming", [1, 2]), "streaming"),
    ("files-list", setter("files", ["backbone.onnx"]), "files"),
    ("files-no-backbone", deleter("files.backbone"), "files.backbone"),
    ("role-traversal", lambda _m, d: d["files"].update(
        {"../x": {"path": "x", "sha256": "0" * 64, "bytes": 0}}), "role name"),
    ("path-parent", setter("files.backbone.path", "../backbone.onnx"), "files.backbone.path"),
    ("path-absolute", setter("files.backbone.path", "/etc/passwd"), "files.backbone.path"),
    ("path-backslash", setter("files.backbone.path", "..\\backbone.onnx"),
     "files.backbone.path"),
    ("path-dot", setter("files.backbone.path", "."), "files.backbone.path"),
    ("path-duplicate", setter("files.pooling.path", "backbone.onnx"), "two roles"),
    ("labels-absolute-consistent", labels_path_absolute, "files.labels.path"),
    ("labels-parent-consistent", labels_path_parent, "files.labels.path"),
    ("labels-symlink-outside", labels_symlink_outside, "outside the model dir"),
    ("sha256-not-hex", setter("files.backbone.sha256", "xyz"), "files.backbone.sha256"),
    ("sha256-wrong", setter("files.pooling.sha256", "0" * 64), "sha256 mismatch"),
    ("bytes-negative", setter("files.backbone.bytes", -1), "files.backbone.bytes"),
    ("bytes-absurd", setter("files.backbone.bytes", 10**12), "files.backbone.bytes"),
    ("data-file-altered", data_file_altered, "sha256 mismatch"),
    ("workbench-path-parent", workbench("../end_to_end.onnx"), "workbench.end_to_end.path"),
    ("workbench-path-absolute", workbench("/tmp/e2e.onnx"), "workbench.end_to_end.path"),
    ("workbench-path-duplicate", workbench("backbone.onnx"), "two roles"),
    ("workbench-list", setter("workbench", ["end_to_end.onnx"]), "workbench"),
    ("bytes-wrong", setter("files.backbone.bytes", 12), "size mismatch"),
    ("file-missing", setter("files.head.path", "nothing.onnx"), "missing"),
    ("backbone-not-onnx", replace_file("backbone", b"this is not a protobuf\n" * 10),
     "not a loadable ONNX model"),
    ("classifier-empty-file", replace_file("classifier", b""), "not a loadable ONNX model"),
    ("labels-not-utf8", replace_file("labels", b"\xff\xfe\x00bad"), "not UTF-8"),
    ("danger-column-5", setter("classifier.danger_column", 5), "danger_column"),
    ("danger-column-negative", setter("classifier.danger_column", -1),
     "classifier.danger_column"),
    ("classifier-output-unknown", setter("classifier.output", "nope"), "nope"),
    ("classifier-list", setter("classifier", [0.5]), "classifier"),
    ("classifier-input-unknown", replace_file("classifier", classifier_reading("mystery")),
     "expected an embedding, and at most 'audioset_probs' beside it"),
    ("classifier-head-width", replace_file("classifier", classifier_reading("audioset_probs", 7)),
     "classifier reads 7 head probabilities but head.onnx gives 3"),
    ("classifier-no-embedding", replace_file("classifier", head_only_classifier()),
     "classifier has no embedding input, only ['audioset_probs']"),
    ("classifier-reads-missing-head",
     without_head(replace_file("classifier", classifier_reading("audioset_probs"))),
     "reads 'audioset_probs' but the model dir has no head.onnx"),
    ("classes-thresholds-short", classes(thresholds=[0.5]), "classes.thresholds"),
    ("classes-threshold-0", classes(thresholds=[0.0, 0.5]), "classes.thresholds[0]"),
    ("classes-names-dup", classes(names=["a", "a"], thresholds=[0.5, 0.5]), "classes.names"),
    ("classes-names-upper", classes(names=["Smoke", "b"]), "classes.names"),
    ("classes-evidence", classes(evidence=["magic"]), "classes.evidence"),
    ("classes-evidence-empty", classes(evidence=[]), "classes.evidence"),
    ("classes-level-gate", classes(level_gate_dbfs=10), "classes.level_gate_dbfs"),
    ("classes-unknown-key", classes(colour="red"), "classes.colour"),
    ("classes-min-seconds-short", classes(min_seconds=[6.0]), "classes.min_seconds must"),
    ("classes-min-seconds-negative", classes(min_seconds=[-1.0, 0.0]),
     "classes.min_seconds[0]"),
    ("classes-min-seconds-61", classes(min_seconds=[0.0, 61]), "classes.min_seconds[1]"),
    ("classes-min-seconds-text", classes(min_seconds=["6", 0]), "classes.min_seconds[0]"),
    ("gain-max-41", streaming(gain_max_db=41),
     "streaming.gain_max_db must be a finite number in [0, 40], got 41.0"),
    ("gain-target-text", streaming(gain_target_dbfs="-20"), "streaming.gain_target_dbfs"),
    ("gain-target-positive", streaming(gain_target_dbfs=6), "streaming.gain_target_dbfs"),
    ("gain-on-chunked-windows", streaming(gain_max_db=10),
     "streaming.gain_max_db needs window_embedding 'whole'"),
    ("gain-without-its-graph", streaming(window_embedding="whole", gain_max_db=10),
     "files.gain is missing (streaming.gain_max_db is set)"),
    ("gain-without-a-front-end", gain_over_the_waveform,
     "files.frontend is missing (streaming.gain_max_db raises the front end's log-mel)"),
    ("format-other", setter("format", "onnx-zoo"), "not an edge-detect manifest"),
    ("format-version-99", setter("format_version", 99), "newer than this runtime"),
    ("format-version-string", setter("format_version", "2"), "format_version"),
    ("manifest-list", whole([1, 2, 3]), "must be a JSON object, got a list"),
    ("manifest-string", whole("model"), "must be a JSON object"),
    ("manifest-empty-object", whole({}), "not an edge-detect manifest"),
    ("manifest-truncated", raw_text('{"format": "edge-detect-model", "files": {'),
     "unreadable manifest"),
    ("manifest-huge", raw_text(" " * (5 << 20) + "{}"), "larger than"),
    ("manifest-deep", raw_text("[" * 100_000 + "]" * 100_000), "unreadable manifest"),
]


def tamper(tiny: Path, tmp_path: Path, edit: Edit) -> Path:
    model = copy_model(tiny, tmp_path / "model")
    data = read(model)
    try:
        edit(model, data)
    except StopIteration:
        return model
    write(model, data)
    return model


def open_and_score(model: Path) -> None:
    sessions = load_sessions(model, "cpu")
    Scorer(sessions).danger(tone(1.0)[:1].reshape(1, 1))


def test_a_classifier_reading_the_head_gets_its_output(tiny: Path, tmp_path: Path) -> None:
    model = tamper(tiny, tmp_path, replace_file("classifier", classifier_reading("audioset_probs")))
    sessions = load_sessions(model, "cpu")
    emb = np.array([[-4.0], [0.0], [4.0]], np.float32)
    got = Scorer(sessions).danger(emb)  # column 1: the largest head probability
    np.testing.assert_allclose(got, run1(sessions.head, emb).max(axis=1), atol=1e-7)


def test_corpus_is_large() -> None:
    assert len(TAMPERED) >= 30


@pytest.mark.parametrize(("name", "edit", "expected"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_model_dir_is_refused_in_one_line(tiny: Path, tmp_path: Path, name: str,
                                                   edit: Edit, expected: str) -> None:
    model = tamper(tiny, tmp_path, edit)
    with pytest.raises((ManifestError, ScoringError)) as info:
        open_and_score(model)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    assert expected in message, message


CLI_SUBSET = ["threshold-1.5", "manifest-list", "chunk-samples-1e9", "labels-symlink-outside",
              "backbone-not-onnx", "path-parent", "sample-rate-0", "classes-evidence"]


@pytest.mark.parametrize("name", CLI_SUBSET)
def test_edge_detect_refuses_tampered_dir_in_one_line(tiny: Path, tmp_path: Path,
                                                      name: str) -> None:
    _, edit, expected = next(t for t in TAMPERED if t[0] == name)
    model = tamper(tiny, tmp_path, edit)
    (tmp_path / "in").mkdir()
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", str(tmp_path / "in"), "--once"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert expected in res.stderr


# --- model id -------------------------------------------------------------------------------

EDITS_THAT_CHANGE_THE_ID: list[tuple[str, Edit]] = [
    ("threshold", setter("classifier.threshold", 0.51)),
    ("sample_rate", setter("input.sample_rate", 16000)),
    ("chunk_samples", setter("streaming.chunk_samples", 16000)),
    ("window_chunks", setter("streaming.window_chunks", 4)),
    ("kind", setter("classifier.kind", "something else")),
    ("danger_column", setter("classifier.danger_column", 0)),
    ("backbone name", setter("backbone.name", "renamed")),
    ("new top-level key", setter("note", "hello")),
    ("labels file", replace_file("labels", b"A\nB\nC\n")),
    ("classes section", classes()),
]


@pytest.mark.parametrize(("what", "edit"), EDITS_THAT_CHANGE_THE_ID,
                         ids=[e[0] for e in EDITS_THAT_CHANGE_THE_ID])
def test_any_edit_changes_the_model_id(tiny: Path, tmp_path: Path, what: str,
                                       edit: Edit) -> None:
    before = load_manifest(tiny).model_id()
    model = tamper(tiny, tmp_path, edit)
    assert load_manifest(model).model_id() != before


def test_model_id_ignores_only_volatile_fields_and_layout(tiny: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny)
    model = copy_model(tiny, tmp_path / "model")
    data = read(model)
    data["created"] = "2030-01-01T00:00:00+00:00"
    data["workbench"] = {"end_to_end": {"path": ".workbench/end_to_end.onnx",
                                        "sha256": "0" * 64, "bytes": 1}}  # never deployed
    (model / MANIFEST_NAME).write_text(json.dumps(data, indent=7, sort_keys=True))
    assert load_manifest(model).model_id() == manifest.model_id()
    assert len(manifest.model_id()) == 64


def test_expect_model_pins_the_model(tiny: Path, tmp_path: Path) -> None:
    model_id = load_manifest(tiny).model_id()
    load_sessions(tiny, "cpu", expect_model=model_id)
    edited = tamper(tiny, tmp_path, setter("input.sample_rate", 16000))
    with pytest.raises(ManifestError, match="is not the expected"):
        load_sessions(edited, "cpu", expect_model=model_id)
    with pytest.raises(ManifestError, match="64 hex digits"):
        load_sessions(tiny, "cpu", expect_model=model_id[:12])
    (tmp_path / "in").mkdir()
    cmd = [sys.executable, "-m", "edge_runtime.cli", "--input", str(tmp_path / "in"), "--once"]
    ok = subprocess.run([*cmd, "--model", str(tiny), "--expect-model", model_id],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert model_id in ok.stderr  # the full id is logged, so it can be pinned
    bad = subprocess.run([*cmd, "--model", str(edited), "--expect-model", model_id],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "is not the expected" in bad.stderr


# --- format versions, round trip ------------------------------------------------------------

def test_format_1_is_read_and_upgraded(tiny: Path, tmp_path: Path) -> None:
    model = copy_model(tiny, tmp_path / "model")
    data = read(model)
    data["format_version"] = 1
    data["classifier"]["trained_on"] = {"data": "/home/builder/datasets/ESC-50-master"}
    del data["classifier"]["output"]
    write(model, data)
    manifest = load_manifest(model)
    assert manifest.format_version == 2
    assert manifest.classifier.trained_on["data"] == "ESC-50-master"
    assert manifest.classifier.output is None  # the runtime picks the float output
    open_and_score(model)
    classes(level_gate={"level_gate_dbfs": -55.0})(model, data)  # as early class builds wrote
    write(model, data)
    upgraded = load_manifest(model).classes
    assert upgraded.calibration == {"level_gate": {"level_gate_dbfs": -55.0}}
    data["format_version"] = 2
    write(model, data)
    with pytest.raises(ManifestError, match="classes.level_gate is not a known field"):
        load_manifest(model)


def test_round_trip_and_classes_section(tiny: Path, tmp_path: Path) -> None:
    model = tamper(tiny, tmp_path, classes(calibration={"method": "per-class recall 0.9"}))
    manifest = load_manifest(model)
    assert manifest.classes.names == ("smoke_alarm", "glass_break")
    assert manifest.classes.thresholds == (0.4, 0.6)
    assert manifest.classes.level_gate_dbfs == -55.0
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    manifest.write(model)
    assert load_manifest(model) == manifest
    assert sha256_file(model / MANIFEST_NAME)


def test_class_min_seconds_round_trip_and_older_manifests(tiny: Path, tmp_path: Path) -> None:
    """``classes.min_seconds`` is kept through a round trip; a manifest without it (older
    builds) loads with 0 for every class, writes no such key and keeps its model id."""
    old = load_manifest(tamper(tiny, tmp_path / "old", classes()))
    assert old.classes.min_seconds == (0.0, 0.0)
    assert "min_seconds" not in old.to_dict()["classes"]
    assert Manifest.from_dict(old.to_dict()).model_id() == old.model_id()
    model = tamper(tiny, tmp_path / "new", classes(min_seconds=[6, 0]))
    manifest = load_manifest(model)
    assert manifest.classes.min_seconds == (6.0, 0.0)
    assert manifest.to_dict()["classes"]["min_seconds"] == [6.0, 0.0]
    assert Manifest.from_dict(manifest.to_dict()) == manifest
    assert manifest.classes.with_thresholds([0.5, 0.5]).min_seconds == (6.0, 0.0)
    assert manifest.model_id() != old.model_id()


def test_manifest_write_refuses_invalid_values(tiny: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny)
    bad = manifest.replace(classifier=manifest.classifier.replace(threshold=2.0))
    with pytest.raises(ManifestError, match="classifier.threshold"):
        bad.write(tmp_path)
    assert not (tmp_path / MANIFEST_NAME).exists()


def test_symlink_inside_the_model_dir_is_allowed(tiny: Path, tmp_path: Path) -> None:
    model = copy_model(tiny, tmp_path / "model")
    (model / "real").mkdir()
    os.replace(model / "head.onnx", model / "real" / "head.onnx")
    os.symlink("real/head.onnx", model / "head.onnx")
    open_and_score(model)
