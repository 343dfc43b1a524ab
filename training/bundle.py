"""What ships to the device: one archive of exactly the files the device loads, with checksums.

A model dir holds two kinds of files. The manifest's ``files`` are what the device loads
(:data:`edge_runtime.sessions.DEVICE_ROLES`: backbone, pooling, head, labels, classifier);
everything else is the workbench's: ``.workbench/`` (``end_to_end.onnx``, the embedding cache,
the fitted pipeline's joblib, ``export.json``) and the build's reports and plots. Workbench
ONNX files the manifest tracks are listed in its separate ``workbench`` section.

``edge-train bundle --model DIR --out X.tar.gz`` writes ``X.tar.gz`` holding one folder with
``manifest.json`` (``workbench`` section removed), the device files and ``SHA256SUMS``
(``sha256sum -c`` format, so a device can check it without Python), plus ``X.tar.gz.sha256``
beside it. The archive is byte-reproducible (sorted members, fixed mtime/owner, gzip mtime 0):
the same model dir gives the same archive.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from edge_runtime.manifest import (
    MANIFEST_NAME,
    ManifestError,
    file_entry,
    load_manifest,
    model_sha256,
    verify_file,
)
from edge_runtime.sessions import DEVICE_ROLES

log = logging.getLogger(__name__)

WORKBENCH = ".workbench"
WORKBENCH_SECTION = "workbench"
END_TO_END = f"{WORKBENCH}/end_to_end.onnx"
SUMS_NAME = "SHA256SUMS"
MTIME = 0  # archive timestamps: fixed, so the same model gives the same bytes


def set_workbench_file(manifest: dict[str, Any], model_dir: Path, role: str,
                       relpath: str) -> dict[str, Any]:
    """Record a workbench file (not deployed) in the manifest's ``workbench`` section."""
    manifest.setdefault(WORKBENCH_SECTION, {})[role] = file_entry(Path(model_dir), relpath)
    manifest["files"].pop(role, None)  # older dirs listed it among the device files
    return manifest


def workbench_file(model_dir: Path, manifest: dict[str, Any], role: str) -> Path | None:
    """Path of a workbench file of ``role`` (``workbench`` section, else legacy ``files``)."""
    entry = (manifest.get(WORKBENCH_SECTION) or {}).get(role) or manifest["files"].get(role)
    return None if entry is None else Path(model_dir) / entry["path"]


def device_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest as shipped: device roles only, no ``workbench`` section."""
    files = manifest["files"]
    dropped = sorted(set(files) - set(DEVICE_ROLES))
    if dropped:
        log.info("not shipped (the device does not load them): %s", ", ".join(dropped))
    shipped = {k: v for k, v in manifest.items() if k != WORKBENCH_SECTION}
    shipped["files"] = {role: files[role] for role in DEVICE_ROLES if role in files}
    for role in ("backbone", "pooling"):
        if role not in shipped["files"]:
            raise ManifestError(f"manifest lists no '{role}' file: nothing to deploy")
    return shipped


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(out: Path, folder: str, model_dir: Path, manifest: dict[str, Any]) -> None:
    """Deterministic tar.gz: folder/, manifest.json, the files (sorted), SHA256SUMS."""
    text = (json.dumps(manifest, indent=2) + "\n").encode()
    entries = sorted(manifest["files"].values(), key=lambda e: e["path"])
    sums = "".join(f"{e['sha256']}  {e['path']}\n" for e in entries)
    sums += f"{hashlib.sha256(text).hexdigest()}  {MANIFEST_NAME}\n"
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=MTIME) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            top = tarfile.TarInfo(folder)
            top.type, top.mode, top.mtime, top.uname, top.gname = (tarfile.DIRTYPE, 0o755,
                                                                   MTIME, "", "")
            tar.addfile(top)
            tar.addfile(_member(f"{folder}/{MANIFEST_NAME}", len(text)), io.BytesIO(text))
            for entry in entries:
                with open(model_dir / entry["path"], "rb") as handle:
                    tar.addfile(_member(f"{folder}/{entry['path']}", entry["bytes"]), handle)
            tar.addfile(_member(f"{folder}/{SUMS_NAME}", len(sums.encode())),
                        io.BytesIO(sums.encode()))
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def bundle(model_dir: str | os.PathLike[str], out: str | os.PathLike[str],
           name: str | None = None) -> dict[str, Any]:
    """Write the device bundle of ``model_dir`` to ``out`` (.tar.gz); return what it holds.

    Every shipped file is sha256-verified against the manifest first (ManifestError if not).
    """
    model_dir, out = Path(model_dir), Path(out)
    manifest = device_manifest(load_manifest(model_dir))
    for role, entry in manifest["files"].items():
        verify_file(model_dir, manifest, role)
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise ManifestError(f"{model_dir}: '{role}' path {entry['path']!r} leaves the dir")
    model_id = model_sha256(manifest)
    folder = name or f"{manifest['backbone']['name']}-{model_id[:12]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_tar(out, folder, model_dir, manifest)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    (out.parent / f"{out.name}.sha256").write_text(f"{digest}  {out.name}\n")
    files = {role: {"path": e["path"], "bytes": e["bytes"]} for role, e in
             manifest["files"].items()}
    return {"archive": str(out), "folder": folder, "bytes": out.stat().st_size,
            "sha256": digest, "model_id": model_id, "files": files,
            "unpacked_bytes": sum(e["bytes"] for e in files.values())}
