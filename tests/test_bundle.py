"""``edge-train bundle``: one archive of exactly the files the device loads; the device unpacks,
checks and runs it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge_runtime.manifest import FileEntry, ManifestError, load_manifest, sha256_file
from edge_runtime.sessions import DEVICE_ROLES, load_sessions
from training.bundle import SUMS_NAME, bundle, device_manifest


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = dest.iterdir()
    return folder


def test_bundle_holds_only_device_files_and_runs(mn04_model_dir: Path, esc10_dir: Path,
                                                 tmp_path: Path) -> None:
    from tests.test_aarch64 import unseen_dog

    info = bundle(mn04_model_dir, tmp_path / "mn04.tar.gz")
    with tarfile.open(tmp_path / "mn04.tar.gz") as tar:
        names = sorted(m.name.split("/", 1)[1] for m in tar.getmembers() if "/" in m.name)
    manifest = load_manifest(mn04_model_dir)
    shipped = {e.path for e in device_manifest(manifest).files.values()}
    assert names == sorted({*shipped, "manifest.json", SUMS_NAME})
    assert set(info["files"]) <= set(DEVICE_ROLES)
    # the workbench's files exist in the model dir, and none of them ship
    workbench = [p.relative_to(mn04_model_dir).as_posix() for p in mn04_model_dir.rglob("*")
                 if p.is_file() and p.relative_to(mn04_model_dir).as_posix() not in
                 {*shipped, "manifest.json"}]
    assert {".workbench/end_to_end.onnx", "report.json", "roc_pr.png"} <= set(workbench)
    assert any(w.endswith(".joblib") for w in workbench)
    assert any(w.endswith(".npz") for w in workbench)
    assert not set(workbench) & set(names)

    device = unpack(tmp_path / "mn04.tar.gz", tmp_path / "device")
    assert device.name == info["folder"]
    if shutil.which("sha256sum"):
        res = subprocess.run(["sha256sum", "-c", SUMS_NAME], cwd=device, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
    unpacked = json.loads((device / "manifest.json").read_text())
    assert "workbench" not in unpacked
    sessions = load_sessions(device, provider="cpu")  # every file verified
    assert sessions.classifier is not None and sessions.head is not None and sessions.labels
    # the workbench section is not part of the id: the bundle is the model dir's model
    assert sessions.model_id == info["model_id"] == load_manifest(device).model_id() \
        == manifest.model_id()

    clips = tmp_path / "in"
    clips.mkdir()
    dog = unseen_dog(esc10_dir)
    shutil.copy2(dog, clips / dog.name)
    events = tmp_path / "events.jsonl"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(device),
                          "--input", str(clips), "--once", "--events", str(events)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert records and records[0]["model_sha256"] == info["model_id"]


def test_bundle_is_byte_reproducible(mn04_model_dir: Path, tmp_path: Path) -> None:
    a = bundle(mn04_model_dir, tmp_path / "a.tar.gz", name="m")
    b = bundle(mn04_model_dir, tmp_path / "b.tar.gz", name="m")
    assert a["sha256"] == b["sha256"]
    assert (tmp_path / "a.tar.gz.sha256").read_text().split()[0] == a["sha256"]
    assert sha256_file(tmp_path / "a.tar.gz") == a["sha256"]


def test_bundle_refuses_a_file_that_fails_its_checksum(mn04_model_dir: Path,
                                                      tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(mn04_model_dir, model)
    data = bytearray((model / "classifier.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (model / "classifier.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="classifier.onnx: sha256 mismatch"):
        bundle(model, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_legacy_end_to_end_role_is_not_shipped() -> None:
    """Older model dirs listed end_to_end.onnx among the files: the bundle leaves it out."""
    from tests.runtime_model import tiny_manifest

    base = tiny_manifest()
    entry = FileEntry("end_to_end.onnx", "0" * 64, 1)
    manifest = base.replace(files={**base.files, "end_to_end": entry},
                            workbench={"end_to_end": entry.replace(path=".workbench/e2e.onnx")})
    shipped = device_manifest(manifest)
    assert set(shipped.files) == {"backbone", "pooling"}
    assert "workbench" not in shipped.to_dict()
    with pytest.raises(ManifestError, match="no 'pooling' file"):
        device_manifest(manifest.replace(files={"backbone": base.files["backbone"]}))


def test_cli_bundle(mn04_model_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from training.cli import main

    res = CliRunner().invoke(main, ["bundle", "--model", str(mn04_model_dir), "--out",
                                    str(tmp_path / "m.tar.gz")])
    assert res.exit_code == 0, res.output
    assert "sha256sum -c SHA256SUMS" in res.output
    assert (tmp_path / "m.tar.gz").is_file()
