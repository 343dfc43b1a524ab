"""The things being timed: torch eager reference, ONNX chain (CPU / CUDA with I/O binding /
TensorRT), and the daemon's per-hop work. Each returns a ``run(batch_array)`` callable.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.features import chunk_frames, pool_window, to_chunks
from edge_runtime.manifest import load_manifest
from edge_runtime.sessions import GRAPH_ROLES, ModelSessions, load_sessions, run1

Runner = Callable[[np.ndarray], Any]


def torch_runner(backbone: str, weights: Path, threads: int | None) -> Runner:
    """Full torch eager model (waveform → 527 probabilities): PANNs Cnn14 / the project's mn04."""
    import torch

    from export.weights import load_state_dict

    if threads:
        torch.set_num_threads(threads)
    state = load_state_dict(weights)
    if backbone == "cnn14":
        from export.cnn14 import reference_model

        model = reference_model(state)  # panns_inference.models.Cnn14, the reference
    elif backbone == "mn04":
        from export.mn04 import MN04Tagger, build_mn04

        model = MN04Tagger(build_mn04(state)).eval()
    else:
        raise ValueError(f"no torch reference for backbone {backbone!r}")

    def run(batch: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(batch))

    return run


def onnx_sessions(model_dir: Path, provider: str, threads: int | None) -> ModelSessions:
    return load_sessions(model_dir, provider, threads, with_classifier=True)


def _chain(sessions: ModelSessions) -> list[Any]:
    """The graphs a waveform batch passes: [front end →] backbone → pooling [→ head]."""
    return [s for s in (sessions.frontend, sessions.backbone, sessions.pooling, sessions.head)
            if s is not None]


def onnx_runner(sessions: ModelSessions) -> Runner:
    """[front end →] backbone → pooling → head (if any) on the batch; I/O binding on CUDA."""
    if sessions.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return _iobinding_runner(sessions)
    chain = _chain(sessions)

    def run(batch: np.ndarray) -> Any:
        value = batch
        for sess in chain:
            value = run1(sess, value)
        return value

    return run


def _iobinding_runner(sessions: ModelSessions) -> Runner:
    """GPU chain with I/O binding: intermediate tensors stay on the device between graphs."""
    chain = _chain(sessions)

    def run(batch: np.ndarray) -> Any:
        value = None
        for i, sess in enumerate(chain):
            binding = sess.io_binding()
            name = sess.get_inputs()[0].name
            if i == 0:
                binding.bind_cpu_input(name, np.ascontiguousarray(batch, np.float32))
            else:
                binding.bind_ortvalue_input(name, value)
            binding.bind_output(sess.get_outputs()[0].name, "cuda")
            sess.run_with_iobinding(binding)
            value = binding.get_outputs()[0]
        return value.numpy()

    return run


def daemon_hop_runner(sessions: ModelSessions, seed: int = 0) -> tuple[Runner, float]:
    """The daemon's work per hop at its defaults, and the hop length in seconds (with a
    ``window_stride`` above 1: per stride, the chunks between two scored windows).

    With a classifier this is the runtime's own ``DetectorStream.push`` of one chunk: the
    backbone on the chunk, the chunk pooled and classified alone, the window's cached frames
    pooled and classified (AudioSet tags are computed per event, not per hop). Without one
    (an export-only dir): the backbone on the chunk and the window pooling.
    """
    chunk = sessions.chunk_samples
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(chunk * (sessions.window_chunks + 1))).astype(np.float32)
    if sessions.classifier is not None:
        from edge_runtime.detector import Detector

        # a window is scored every ``window_stride`` chunks: one run pushes that many, so each
        # run does the same work and the cost is per audio-second of the whole stride
        stride = sessions.window_stride
        stream = Detector(sessions=sessions).stream()
        stream.push(audio[:-chunk])  # a full window of history
        block = np.tile(audio[-chunk:], stride)
        return (lambda _: stream.push(block)), stride * chunk / sessions.sample_rate
    chunks = to_chunks(audio[:-chunk], chunk)
    window = chunk_frames(sessions, chunks)  # frames of the window's chunks (kept by the daemon)

    def run(_: np.ndarray) -> Any:
        frames = chunk_frames(sessions, chunks[-1:])
        window[:-1] = window[1:]
        window[-1] = frames[0]
        return pool_window(sessions, window)[None]

    return run, chunk / sessions.sample_rate


def model_info(model_dir: Path) -> dict[str, Any]:
    """Backbone name, precision and on-disk sizes of a model dir."""
    manifest = load_manifest(model_dir)
    files = manifest.files
    graph_roles = [r for r in GRAPH_ROLES if r in files]
    data_roles = [f"{r}_data" for r in graph_roles if f"{r}_data" in files]  # external weights
    return {
        "model_dir": str(model_dir),
        "backbone": manifest.backbone.name,
        "precision": "int8" if manifest.quantized else "fp32",
        "checkpoint": manifest.backbone.checkpoint,
        "backbone_mb": sum(files[r].bytes for r in ("frontend", "frontend_data", "backbone",
                                                    "backbone_data") if r in files) / 1e6,
        "runtime_mb": sum(files[r].bytes for r in graph_roles + data_roles) / 1e6,
        "has_classifier": "classifier" in files,
    }


def default_threads() -> int:
    """What onnxruntime and torch use when not told: the usable cores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
