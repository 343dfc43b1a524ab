"""The model directory contract: ``manifest.json`` plus the ONNX files it lists.

The manifest is the only thing the workbench (``export/``, ``training/``) and the device
(``edge_runtime``) share. Every file is listed with its sha256; the device verifies each one
before loading it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT = "edge-detect-model"
FORMAT_VERSION = 1


class ManifestError(RuntimeError):
    """The model directory is missing, malformed, or a file fails its checksum."""


def sha256_file(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(model_dir: Path, name: str) -> dict[str, Any]:
    """Manifest entry (path, sha256, bytes) for a file inside ``model_dir``."""
    path = model_dir / name
    return {"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_manifest(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and sanity-check ``model_dir/manifest.json`` (no checksum work)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(
            f"{path}: no manifest.json — build a model dir with 'edge-train export' or "
            "'edge-train build'"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    if manifest.get("format") != FORMAT:
        raise ManifestError(
            f"{path}: not an edge-detect manifest (format={manifest.get('format')!r})"
        )
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ManifestError(
            f"{path}: format_version {manifest['format_version']} is newer than this runtime "
            f"understands ({FORMAT_VERSION})"
        )
    for key in ("input", "streaming", "files"):
        if key not in manifest:
            raise ManifestError(f"{path}: manifest lacks '{key}'")
    return manifest


def model_file(
    model_dir: str | os.PathLike[str], manifest: dict[str, Any], role: str
) -> Path | None:
    """Path of the file playing ``role`` (backbone, pooling, head, classifier...) or None."""
    entry = manifest["files"].get(role)
    return None if entry is None else Path(model_dir) / entry["path"]


def verify_file(model_dir: str | os.PathLike[str], manifest: dict[str, Any], role: str) -> Path:
    """Return the path of ``role`` after checking it exists and matches its sha256."""
    entry = manifest["files"].get(role)
    if entry is None:
        raise ManifestError(f"{Path(model_dir) / MANIFEST_NAME}: no '{role}' file listed")
    path = Path(model_dir) / entry["path"]
    if not path.is_file():
        raise ManifestError(f"{path}: listed in the manifest as '{role}' but missing")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ManifestError(
            f"{path}: sha256 mismatch (manifest {entry['sha256'][:12]}…, file {actual[:12]}…); "
            "refusing to load a model that is not the one the manifest describes"
        )
    return path


def model_sha256(manifest: dict[str, Any]) -> str:
    """One id for the whole model: sha256 over the sorted (role, file sha256) pairs."""
    digest = hashlib.sha256()
    for role in sorted(manifest["files"]):
        digest.update(f"{role}={manifest['files'][role]['sha256']}\n".encode())
    return digest.hexdigest()
