"""Checkpoint → model dir: resolve, load, build the backbone parts, export, self-check."""

from __future__ import annotations

import logging
from pathlib import Path

from edge_runtime.manifest import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_WINDOW_CHUNKS,
    Manifest,
    sha256_file,
)
from export import backbones, weights
from export.onnx_export import check_against_torch, export_model_dir

log = logging.getLogger(__name__)


def export_from_checkpoint(weights_arg: str, out_dir: Path, backbone: str = "auto",
                           chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                           window_chunks: int = DEFAULT_WINDOW_CHUNKS) -> Manifest:
    """Export the checkpoint ``weights_arg`` (path or known name) into ``out_dir``."""
    path = weights.resolve(weights_arg)
    state = weights.load_state_dict(path)
    name = backbones.detect(state) if backbone == "auto" else backbone
    spec, parts = backbones.build(name, state)
    checkpoint = {"file": path.name, "sha256": sha256_file(path)}
    official = weights.CHECKPOINTS.get(name)
    checkpoint["official"] = bool(official and official.sha256 == checkpoint["sha256"])
    log.info("exporting %s from %s (%s)", name, path, checkpoint["sha256"][:12])
    manifest = export_model_dir(spec, parts, out_dir, checkpoint=checkpoint,
                                chunk_seconds=chunk_seconds, window_chunks=window_chunks)
    errors = check_against_torch(parts, out_dir)
    log.info("self-check ONNX vs torch: %s", errors)
    return manifest
