"""What ships to the device: one archive of exactly the files the device loads, with checksums.

A model dir holds two kinds of files. The manifest's ``files`` are what the device loads
(:data:`edge_runtime.sessions.DEVICE_ROLES`: front end, backbone, pooling, head, loudness
gain, classifier and labels; every mn04 export lists ``gain.onnx``, loaded only by models whose
windows are raised);
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
from pathlib import Path
from typing import Any

from edge_runtime import atomic
from edge_runtime.manifest import (
    MANIFEST_NAME,
    WORKBENCH_DIR,
    Manifest,
    ManifestError,
    json_safe,
    load_manifest,
    verify_file,
)
from edge_runtime.sessions import DEVICE_ROLES

log = logging.getLogger(__name__)

END_TO_END = f"{WORKBENCH_DIR}/end_to_end.onnx"
SUMS_NAME = "SHA256SUMS"
MTIME = 0  # archive timestamps: fixed, so the same model gives the same bytes


def device_manifest(manifest: Manifest) -> Manifest:
    """The manifest as shipped: device roles only, no ``workbench`` section."""
    files = manifest.files
    dropped = sorted(set(files) - set(DEVICE_ROLES))
    if dropped:
        log.info("not shipped (the device does not load them): %s", ", ".join(dropped))
    for role in ("backbone", "pooling"):
        if role not in files:
            raise ManifestError(f"manifest lists no '{role}' file: nothing to deploy")
    return manifest.replace(files={role: files[role] for role in DEVICE_ROLES if role in files},
                            workbench={})


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, MTIME, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(out: Path, folder: str, model_dir: Path, manifest: Manifest) -> None:
    """Deterministic tar.gz: folder/, manifest.json, the files (sorted), SHA256SUMS."""
    text = (json.dumps(json_safe(manifest.to_dict()), indent=2) + "\n").encode()
    entries = sorted(manifest.files.values(), key=lambda e: e.path)
    sums = "".join(f"{e.sha256}  {e.path}\n" for e in entries)
    sums += f"{hashlib.sha256(text).hexdigest()}  {MANIFEST_NAME}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(out) as tmp, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=MTIME) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = tarfile.TarInfo(folder)
        top.type, top.mode, top.mtime, top.uname, top.gname = (tarfile.DIRTYPE, 0o755,
                                                               MTIME, "", "")
        tar.addfile(top)
        tar.addfile(_member(f"{folder}/{MANIFEST_NAME}", len(text)), io.BytesIO(text))
        for entry in entries:
            with open(model_dir / entry.path, "rb") as handle:
                tar.addfile(_member(f"{folder}/{entry.path}", entry.bytes), handle)
        tar.addfile(_member(f"{folder}/{SUMS_NAME}", len(sums.encode())),
                    io.BytesIO(sums.encode()))


def bundle(model_dir: str | os.PathLike[str], out: str | os.PathLike[str],
           name: str | None = None) -> dict[str, Any]:
    """Write the device bundle of ``model_dir`` to ``out`` (.tar.gz); return what it holds.

    Every shipped file is sha256-verified against the manifest first (ManifestError if not).
    """
    model_dir, out = Path(model_dir), Path(out)
    manifest = device_manifest(load_manifest(model_dir))
    for role in manifest.files:  # paths confined to the model dir (checked while parsing)
        verify_file(model_dir, manifest, role)
    model_id = manifest.model_id()
    folder = name or f"{manifest.backbone.name}-{model_id[:12]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_tar(out, folder, model_dir, manifest)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    atomic.write_text(out.parent / f"{out.name}.sha256", f"{digest}  {out.name}\n")
    files = {role: {"path": e.path, "bytes": e.bytes} for role, e in manifest.files.items()}
    return {"archive": str(out), "folder": folder, "bytes": out.stat().st_size,
            "sha256": digest, "model_id": model_id, "files": files,
            "unpacked_bytes": sum(e["bytes"] for e in files.values())}
