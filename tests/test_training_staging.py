"""A build that fails leaves the model dir as it was; one that succeeds replaces it whole."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import shared_path
from tests.runtime_model import build_tiny_model
from training.reports import WORKBENCH
from training.staging import staged


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def model_dir(tmp_path: Path) -> Path:
    out = tmp_path / "models_onnx"
    out.mkdir()
    (out / "manifest.json").write_text('{"old": true}')
    (out / "classifier.onnx").write_bytes(b"old classifier")
    (out / "end_to_end.onnx").write_bytes(b"an older export's file")
    (out / "README.md").write_text("kept")
    (out / WORKBENCH).mkdir()
    (out / WORKBENCH / "embeddings.npz").write_bytes(b"cache")
    return out


def test_a_failed_build_leaves_the_model_dir_and_its_caches(tmp_path: Path) -> None:
    out = model_dir(tmp_path)
    before = snapshot(out)
    with pytest.raises(RuntimeError, match="half way"), staged(out) as stage:
        assert (stage / WORKBENCH / "embeddings.npz").read_bytes() == b"cache"  # moved in
        (stage / "manifest.json").write_text('{"new": true}')
        (stage / "classifier.onnx").unlink()
        raise RuntimeError("half way")
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["models_onnx"]  # no staging folder left


def test_a_finished_build_replaces_the_model_dir(tmp_path: Path) -> None:
    out = model_dir(tmp_path)
    with staged(out) as stage:
        (stage / "manifest.json").write_text('{"new": true}')
        (stage / "classifier.onnx").write_bytes(b"new classifier")
        (stage / "end_to_end.onnx").unlink()  # the new export has no such file
        (stage / WORKBENCH / "mixes").mkdir()
    assert (out / "manifest.json").read_text() == '{"new": true}'
    assert not (out / "end_to_end.onnx").exists() and (out / "README.md").read_text() == "kept"
    assert (out / WORKBENCH / "mixes").is_dir()
    assert (out / WORKBENCH / "embeddings.npz").read_bytes() == b"cache"
    assert [p.name for p in tmp_path.iterdir()] == ["models_onnx"]


def test_a_bad_extra_folder_is_refused_before_the_model_dir_is_touched(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model")
    before = snapshot(model)
    esc = shared_path("esc10")
    bad = tmp_path / "bad"
    bad.mkdir()
    res = subprocess.run([sys.executable, "-m", "training.cli", "build", "--data", str(esc),
                          "--extra", str(bad), "--out", str(model)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "labels.csv" in res.stderr, res.stderr
    assert snapshot(model) == before


def test_the_current_folder_as_the_model_dir(tmp_path: Path, monkeypatch) -> None:
    """``--out .``: the staging folder lies beside the real folder, not inside it."""
    out = model_dir(tmp_path)
    monkeypatch.chdir(out)
    with staged(".") as stage:
        assert stage == tmp_path / ".models_onnx.building"
        (stage / "manifest.json").write_text('{"new": true}')
    assert (out / "manifest.json").read_text() == '{"new": true}'
    assert (out / WORKBENCH / "embeddings.npz").read_bytes() == b"cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models_onnx"]


def test_a_killed_builds_caches_are_taken_back(tmp_path: Path) -> None:
    out = model_dir(tmp_path)
    killed = tmp_path / ".models_onnx.building"  # what SIGKILL mid-build leaves
    killed.mkdir()
    (out / WORKBENCH).rename(killed / WORKBENCH)
    (killed / "manifest.json").write_text("half")
    with staged(out) as stage:
        assert (stage / WORKBENCH / "embeddings.npz").read_bytes() == b"cache"
        assert (stage / "manifest.json").read_text() == '{"old": true}'
    assert (out / WORKBENCH / "embeddings.npz").read_bytes() == b"cache"


def test_a_first_build_that_fails_keeps_its_caches_and_its_error(tmp_path: Path) -> None:
    out = tmp_path / "new_model"
    with pytest.raises(KeyboardInterrupt), staged(out) as stage:
        (stage / WORKBENCH).mkdir()
        (stage / WORKBENCH / "embeddings.npz").write_bytes(b"computed")
        raise KeyboardInterrupt
    assert (out / WORKBENCH / "embeddings.npz").read_bytes() == b"computed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new_model"]
