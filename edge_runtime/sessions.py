"""Open every ONNX session a model dir lists, after verifying each file's sha256."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_runtime import providers as eps
from edge_runtime.manifest import load_manifest, model_sha256, verify_file

log = logging.getLogger(__name__)

GRAPH_ROLES = ("backbone", "pooling", "head", "classifier")
DATA_SUFFIX = "_data"  # role of a graph's external initializers: backbone → backbone_data


def data_role(role: str) -> str:
    """Manifest role of the external-data file (``<graph>.onnx.data``) of graph ``role``."""
    return f"{role}{DATA_SUFFIX}"


# Every manifest role the device loads (load_sessions below); a deployment ships these only.
DEVICE_ROLES = (*GRAPH_ROLES, *(data_role(r) for r in GRAPH_ROLES), "labels")


@dataclass
class ModelSessions:
    """Sessions of one model dir: backbone and pooling always; head and classifier if present."""

    model_dir: Path
    manifest: dict[str, Any]
    backbone: ort.InferenceSession
    pooling: ort.InferenceSession
    head: ort.InferenceSession | None = None
    classifier: ort.InferenceSession | None = None
    labels: list[str] = field(default_factory=list)

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["input"]["sample_rate"])

    @property
    def min_samples(self) -> int:
        return int(self.manifest["input"]["min_samples"])

    @property
    def chunk_samples(self) -> int:
        return int(self.manifest["streaming"]["chunk_samples"])

    @property
    def window_chunks(self) -> int:
        return int(self.manifest["streaming"]["window_chunks"])

    @property
    def window_embedding(self) -> str:
        """``chunked``: a window pools its chunks' frames; ``whole``: one backbone pass over
        the window's audio (no chunk-edge effects; costs one window of audio per hop)."""
        return str(self.manifest["streaming"].get("window_embedding", "chunked"))

    @property
    def chunk_decisions(self) -> bool:
        """Whether each chunk scored alone may decide (the manifest's default)."""
        return bool(self.manifest["streaming"].get("chunk_decisions", True))

    @property
    def model_id(self) -> str:
        return model_sha256(self.manifest)

    @property
    def provider(self) -> str:
        """The provider the backbone actually runs on."""
        return self.backbone.get_providers()[0]

    @property
    def threshold(self) -> float | None:
        clf = self.manifest.get("classifier") or {}
        return None if clf.get("threshold") is None else float(clf["threshold"])


def read_labels(path: Path) -> list[str]:
    """One AudioSet display name per line."""
    return [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]


def load_sessions(model_dir: str | os.PathLike[str], provider: str = "auto",
                  threads: int | None = None, with_classifier: bool = True) -> ModelSessions:
    """Verify and open the model dir. Raises ManifestError on any missing or altered file."""
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    chosen = eps.resolve(provider, trt_cache_dir=model_dir / ".trt_cache")
    files = manifest["files"]

    def opened(role: str) -> ort.InferenceSession:
        if data_role(role) in files:  # weights beside the graph, memory-mapped by onnxruntime
            verify_file(model_dir, manifest, data_role(role))
        return eps.open_session(verify_file(model_dir, manifest, role), chosen, threads)

    sessions = ModelSessions(model_dir, manifest, backbone=opened("backbone"),
                             pooling=opened("pooling"))
    if "head" in files:
        sessions.head = opened("head")
    if "labels" in files:
        sessions.labels = read_labels(verify_file(model_dir, manifest, "labels"))
    if with_classifier and "classifier" in files:
        sessions.classifier = opened("classifier")
    log.info("model %s (%s, %s) on %s", model_dir, manifest["backbone"]["name"],
             sessions.model_id[:12], sessions.provider)
    return sessions


def run1(session: ort.InferenceSession, array: np.ndarray) -> np.ndarray:
    """Run a one-input session and return its first output."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(array, dtype=np.float32)})[0]
