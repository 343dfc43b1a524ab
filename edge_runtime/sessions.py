"""Open every ONNX session a model dir lists, after verifying each file's sha256."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_runtime import providers as eps
from edge_runtime.manifest import (
    Manifest,
    ManifestError,
    check_expected,
    load_manifest,
    read_text_file,
    verify_file,
)

log = logging.getLogger(__name__)

GRAPH_ROLES = ("frontend", "backbone", "pooling", "head", "classifier", "gain")
DATA_SUFFIX = "_data"  # role of a graph's external initializers: backbone → backbone_data


def data_role(role: str) -> str:
    """Manifest role of the external-data file (``<graph>.onnx.data``) of graph ``role``."""
    return f"{role}{DATA_SUFFIX}"


# Every manifest role the device loads (load_sessions below); a deployment ships these only.
DEVICE_ROLES = (*GRAPH_ROLES, *(data_role(r) for r in GRAPH_ROLES), "labels")


@dataclass
class ModelSessions:
    """Sessions of one model dir: backbone and pooling always; front end, head and classifier
    if present. With a front end (waveform → log-mel) the backbone reads its output."""

    model_dir: Path
    manifest: Manifest
    backbone: ort.InferenceSession
    pooling: ort.InferenceSession
    frontend: ort.InferenceSession | None = None
    head: ort.InferenceSession | None = None
    classifier: ort.InferenceSession | None = None
    gain: ort.InferenceSession | None = None  # streaming.gain_max_db > 0: a window's loudness
    labels: list[str] = field(default_factory=list)

    @property
    def sample_rate(self) -> int:
        return self.manifest.input.sample_rate

    @property
    def min_samples(self) -> int:
        return self.manifest.input.min_samples

    @property
    def chunk_samples(self) -> int:
        return self.manifest.streaming.chunk_samples

    @property
    def window_chunks(self) -> int:
        return self.manifest.streaming.window_chunks

    @property
    def window_embedding(self) -> str:
        """``chunked``: a window pools its chunks' frames; ``whole``: one backbone pass over
        the window's audio (no chunk-edge effects; costs one window of audio per hop)."""
        return self.manifest.streaming.window_embedding

    @property
    def window_stride(self) -> int:
        """A window is scored every this many chunks (1: every hop)."""
        return self.manifest.streaming.window_stride

    @property
    def chunk_decisions(self) -> bool:
        """Whether each chunk scored alone may decide (the manifest's default)."""
        return self.manifest.streaming.chunk_decisions

    @property
    def model_id(self) -> str:
        return self.manifest.model_id()

    @property
    def provider(self) -> str:
        """The provider the backbone actually runs on."""
        return self.backbone.get_providers()[0]

    @property
    def threshold(self) -> float | None:
        return self.manifest.threshold


def load_sessions(model_dir: str | os.PathLike[str], provider: str = "auto",
                  threads: int | None = None, with_classifier: bool = True,
                  expect_model: str | None = None) -> ModelSessions:
    """Verify and open the model dir. Raises ManifestError on any missing, altered or
    unloadable file, and when ``expect_model`` is given and is not this model's id."""
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    check_expected(manifest, expect_model, model_dir)
    chosen = eps.resolve(provider, trt_cache_dir=model_dir / ".trt_cache")
    files = manifest.files

    def opened(role: str) -> ort.InferenceSession:
        if data_role(role) in files:  # weights beside the graph, memory-mapped by onnxruntime
            verify_file(model_dir, manifest, data_role(role))
        path = verify_file(model_dir, manifest, role)
        try:
            return eps.open_session(path, chosen, threads)
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise ManifestError(f"{model_dir / files[role].path}: '{role}' is not a loadable "
                                f"ONNX model ({eps.ort_message(exc)})") from None

    sessions = ModelSessions(model_dir, manifest, backbone=opened("backbone"),
                             pooling=opened("pooling"))
    if "frontend" in files:
        sessions.frontend = opened("frontend")
    if "head" in files:
        sessions.head = opened("head")
    if manifest.streaming.gain_on:
        sessions.gain = opened("gain")
    if "labels" in files:
        sessions.labels = read_text_file(model_dir, manifest, "labels").splitlines()
    if with_classifier and "classifier" in files:
        sessions.classifier = opened("classifier")
    log.info("model %s (%s, %s) on %s", model_dir, manifest.backbone.name,
             sessions.model_id[:12], sessions.provider)
    return sessions


def run1(session: ort.InferenceSession, array: np.ndarray) -> np.ndarray:
    """Run a one-input session and return its first output."""
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.ascontiguousarray(array, dtype=np.float32)})[0]
