"""Resumable, checksummed downloads (http(s) and file:// URLs) with a one-line offline error."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from edge_runtime import atomic


class DownloadError(RuntimeError):
    """A download failed; the message is one line and says what to do."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float):
    """Open ``url`` at byte ``offset``; returns (stream, total_size or None, resumed)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        handle = path.open("rb")
        handle.seek(offset)
        return handle, path.stat().st_size, True
    request = urllib.request.Request(url, headers={"User-Agent": "edge-detect"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (user-chosen URL)
    resumed = offset > 0 and response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (offset if resumed else 0)) if length else None
    return response, total, resumed


def download(url: str, dest: Path, sha256: str | None, size: int | None = None,
             timeout: float = 30.0, hint: str = "") -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` if present; verify size and sha256.

    The file appears at ``dest`` only once complete and verified (rename from ``.part``).
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    try:
        stream, total, resumed = _open(url, offset, timeout)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot download {url} ({reason}); download it by hand and put it at {dest}"
            + (f" or {hint}" if hint else "")
        ) from exc
    if not resumed:
        offset = 0
    total = total or size
    with stream, part.open("ab" if offset else "wb") as out, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name, leave=False,
        disable=None,
    ) as bar:
        try:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DownloadError(
                f"download of {url} broke off at {part.stat().st_size} bytes ({exc}); "
                f"run the same command again to resume"
            ) from exc
    got = part.stat().st_size
    if size is not None and got != size:
        raise DownloadError(
            f"{part}: {got} bytes, expected {size}; run again to resume (or delete it to restart)"
        )
    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(
                f"{url}: sha256 {actual} does not match the expected {sha256}; file discarded"
            )
    os.replace(part, dest)
    return dest


def copy_local(src: Path, dest: Path) -> Path:
    """Copy a local file into the cache atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic.write_with(dest, lambda tmp: shutil.copyfile(src, tmp))
