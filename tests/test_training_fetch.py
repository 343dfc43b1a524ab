"""``edge-train fetch-esc50`` against a local file:// archive; checksum and offline errors."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from export.download import DownloadError
from training.cli import main
from training.fetch_esc50 import fetch_esc50


def make_archive(path: Path, with_layout: bool = True) -> Path:
    """A miniature of GitHub's ESC-50-master.zip."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ESC-50-master/README.md", "ESC-50\n")
        if with_layout:
            zf.writestr("ESC-50-master/meta/esc50.csv",
                        "filename,fold,target,category,esc10,src_file,take\n"
                        "1-100032-A-0.wav,1,0,dog,True,100032,A\n")
            zf.writestr("ESC-50-master/audio/1-100032-A-0.wav", b"RIFF-not-really")
    return path


def test_fetch_from_local_archive(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "src.zip")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    target = fetch_esc50(tmp_path / "data", url=archive.as_uri(), sha256=digest)
    assert target == tmp_path / "data" / "ESC-50"
    assert (target / "meta" / "esc50.csv").is_file()
    assert (target / "audio" / "1-100032-A-0.wav").is_file()
    source = json.loads((target / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["archive_sha256"] == digest and source["sha256_pinned"] is True
    assert not list((tmp_path / "data").glob(".unpack-*"))
    # again without a pin: the digest is still computed and recorded
    target = fetch_esc50(tmp_path / "data2", url=archive.as_uri())
    source = json.loads((target / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["archive_sha256"] == digest and source["sha256_pinned"] is False


def test_wrong_checksum_discards_the_file(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "src.zip")
    with pytest.raises(DownloadError, match="does not match"):
        fetch_esc50(tmp_path / "data", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "data" / "ESC-50").exists()
    assert not (tmp_path / "data" / "ESC-50-master.zip").exists()


def test_archive_without_esc50_layout(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "src.zip", with_layout=False)
    with pytest.raises(DownloadError, match="no ESC-50 layout"):
        fetch_esc50(tmp_path / "data", url=archive.as_uri())
    assert not (tmp_path / "data" / "ESC-50").exists()


def test_offline_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["fetch-esc50", "--dest", str(tmp_path),
                                       "--url", "http://127.0.0.1:9/master.zip"])
    assert result.exit_code == 2
    assert result.output.startswith("edge-train: error: cannot download")
    assert len(result.output.strip().splitlines()) == 1
