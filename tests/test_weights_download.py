"""Checkpoint fetching: file:// mirror, resume of a truncated download, bad checksum, offline."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from export import weights
from export.download import DownloadError, download
from training.cli import main as edge_train


@pytest.fixture()
def payload(tmp_path: Path) -> tuple[Path, str, int]:
    data = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, several read blocks
    src = tmp_path / "mirror" / "Cnn14_mAP=0.431.pth"
    src.parent.mkdir()
    src.write_bytes(data)
    return src, hashlib.sha256(data).hexdigest(), len(data)


def test_file_url_download_verifies_and_lands_atomically(tmp_path, payload):
    src, sha, size = payload
    dest = tmp_path / "cache" / "ckpt.pth"
    assert download(src.as_uri(), dest, sha, size) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert not dest.with_name("ckpt.pth.part").exists()


def test_truncated_download_resumes_from_the_part_file(tmp_path, payload):
    src, sha, size = payload
    dest = tmp_path / "ckpt.pth"
    part = dest.with_name("ckpt.pth.part")
    part.write_bytes(src.read_bytes()[:300_000])  # a download that broke off
    download(src.as_uri(), dest, sha, size)
    assert dest.read_bytes() == src.read_bytes()


def test_truncated_source_is_a_clear_error(tmp_path, payload):
    src, sha, size = payload
    short = tmp_path / "short.pth"
    short.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(DownloadError, match="bytes, expected"):
        download(short.as_uri(), tmp_path / "ckpt.pth", sha, size)
    assert not (tmp_path / "ckpt.pth").exists()


def test_wrong_checksum_is_rejected_and_discarded(tmp_path, payload):
    src, _, size = payload
    dest = tmp_path / "ckpt.pth"
    with pytest.raises(DownloadError, match="does not match"):
        download(src.as_uri(), dest, "0" * 64, size)
    assert not dest.exists() and not dest.with_name("ckpt.pth.part").exists()


def test_offline_is_one_line_saying_where_to_put_the_file(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setenv("EDGE_DETECT_CACHE", str(tmp_path))
    result = CliRunner().invoke(edge_train, ["fetch-weights"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Cnn14_mAP=0.431.pth" in lines[0] and str(tmp_path) in lines[0]
    assert "zenodo.org" in lines[0]


def test_cli_fetch_with_mirror_rejects_wrong_file(tmp_path, payload):
    src, _, _ = payload  # right name, wrong bytes for the official checksum
    result = CliRunner().invoke(edge_train, ["fetch-weights", "--url", src.as_uri(),
                                             "--dest", str(tmp_path / "w")])
    assert result.exit_code == 2
    assert "edge-train: error:" in result.output
    assert not (tmp_path / "w" / "Cnn14_mAP=0.431.pth").exists()


def test_local_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": {"fc.weight": torch.ones(2, 2)}}, path)
    assert weights.resolve(str(path)) == path
    assert torch.equal(weights.load_state_dict(path)["fc.weight"], torch.ones(2, 2))


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "extra": Path("x")}, path)
    with pytest.raises(ValueError, match="not a loadable torch checkpoint"):
        weights.load_state_dict(path)


def test_unknown_name_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_DETECT_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="edge-train fetch-weights --backbone cnn14"):
        weights.resolve("cnn14")
