"""Download and unpack the official ESC-50 archive (resumable; optional sha256 check).

The upstream archive (GitHub's zip of ``karolpiczak/ESC-50`` master) has **no published
sha256** and can change when the repository does, so there is nothing official to verify
against: pass ``--sha256`` to pin a copy you trust; either way the computed sha256 is printed
and recorded in ``<dest>/ESC-50/SOURCE.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from edge_runtime import atomic
from edge_runtime.manifest import sha256_file
from export.download import DownloadError, download

log = logging.getLogger(__name__)

ESC50_URL = "https://github.com/karolpiczak/ESC-50/archive/master.zip"
ARCHIVE_NAME = "ESC-50-master.zip"
DATASET_DIR = "ESC-50"


def unpack(archive: Path, target: Path) -> Path:
    """Unzip ``archive`` beside ``target`` and move its ESC-50 root (audio/, meta/) there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DownloadError(f"{archive}: not a readable zip ({exc}); delete it and retry"
                                ) from exc
        roots = [p.parent.parent for p in tmp.rglob("meta/esc50.csv")]
        if len(roots) != 1 or not (roots[0] / "audio").is_dir():
            raise DownloadError(f"{archive}: no ESC-50 layout (audio/, meta/esc50.csv) inside")
        if target.exists():
            shutil.rmtree(target)
        os.replace(roots[0], target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_esc50(dest: Path, url: str = ESC50_URL, sha256: str | None = None,
                keep_archive: bool = True) -> Path:
    """Download (resuming a ``.part``) and unpack ESC-50 into ``dest/ESC-50``; return that dir."""
    dest = Path(dest)
    archive = download(url, dest / ARCHIVE_NAME, sha256,
                       hint=f"pass --url file:///path/to/{ARCHIVE_NAME}")
    digest = sha256_file(archive)
    target = unpack(archive, dest / DATASET_DIR)
    atomic.write_json(target / "SOURCE.json", {
        "url": url, "archive_sha256": digest, "sha256_pinned": sha256 is not None,
        "note": "upstream publishes no sha256; this is the digest of the archive we got",
        "fetched": datetime.now(UTC).isoformat(timespec="seconds")})
    log.info("ESC-50 archive sha256 %s", digest)
    if not keep_archive:
        archive.unlink()
    return target
