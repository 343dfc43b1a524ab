"""Export a backbone's (frames, pooling, head) to ONNX and write the model dir's manifest.

Exporter: torch 2.13's default, the dynamo-based ``torch.onnx.export(..., dynamo=True)``. Both it
and the legacy TorchScript exporter export Cnn14 here with the same parity; we choose dynamo
because (1) the TorchScript exporter is deprecated and frozen, (2) ``torch.export`` traces
symbolic shapes, so the in-graph zero-padding of short input (``torch.sym_max``) becomes a real
dynamic Pad instead of a constant baked in at the example length, and (3) its declared
``Dim`` ranges document and check the dynamic batch/length contract at export time.
The STFT stays torchlibrosa's Conv1d-based one: onnxruntime's STFT op is slow on CPU and
missing on CUDA.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from edge_runtime import atomic
from edge_runtime.manifest import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_WINDOW_CHUNKS,
    WORKBENCH_DIR,
    Backbone,
    InputSpec,
    Manifest,
    Streaming,
)
from export.backbones import BackboneSpec
from export.panns import audioset_labels
from export.reproducible import data_path, manifest_entries, save_reproducible

log = logging.getLogger(__name__)

OPSET = 18
WORKBENCH = WORKBENCH_DIR  # workbench-only files of a model dir; never deployed
FILES = {"frontend": "frontend.onnx", "backbone": "backbone.onnx", "pooling": "pooling.onnx",
         "head": "head.onnx", "gain": "gain.onnx"}


TOOLS = ("torch", "onnx", "onnxruntime", "onnxscript", "panns_inference", "torchlibrosa",
         "skl2onnx", "scikit-learn")


def tool_versions() -> dict[str, str]:
    """Versions of every tool that shaped the exported graphs, from the installed packages'
    metadata (importing ``panns_inference`` would run its ``wget`` of the label file)."""
    from importlib import metadata

    versions = {}
    for name in TOOLS:
        try:
            versions["sklearn" if name == "scikit-learn" else name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


QUIET_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter for one export: torch.onnx's "torchvision is not
    installed" warnings (torch resets that logger's level on import, so it is set here) and
    the INFO lines of onnxscript's and onnx_ir's graph passes. Errors still show."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
            output_name: str, dynamic: dict[int, Any]) -> None:
    """Export one module with dynamic dims, then run ``onnx.checker`` on the file."""
    with warnings.catch_warnings(), torch.no_grad(), quiet_exporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=OPSET, input_names=[input_name],
            output_names=[output_name], dynamic_shapes=({k: v for k, v in dynamic.items()},),
            verbose=False,
        )
    program.save(str(path), external_data=False)
    # Same checkpoint and code → same bytes: drop the exporter's per-process debug metadata.
    # Weights of big graphs go to <name>.data, memory-mapped by onnxruntime at load.
    save_reproducible(onnx.load(str(path)), path)
    onnx.checker.check_model(str(path), full_check=True)


def export_parts(spec: BackboneSpec, parts: tuple, out_dir: Path) -> dict[str, float]:
    """Write backbone.onnx, pooling.onnx and head.onnx into ``out_dir`` — and frontend.onnx
    when the frames module splits into a front end and a network (``backbone.onnx`` then reads
    the front end's output), gain.onnx when it has a ``gain_graph`` (the front end's output at
    another loudness); return seconds each."""
    frames_m, pooling_m, head_m = parts
    batch = torch.export.Dim("batch", min=1, max=1024)
    samples = torch.export.Dim("samples", min=1, max=spec.sample_rate * 3600)
    time_dim = torch.export.Dim("time", min=1, max=100_000)
    wave = torch.randn(2, spec.sample_rate * 2) * 0.1
    with torch.no_grad():
        frames = frames_m(wave)
        embedding = pooling_m(frames)
    if hasattr(frames_m, "split"):
        front_m, network_m = frames_m.split()
        with torch.no_grad():
            front = front_m(wave)
        front_time = torch.export.Dim("frames_in", min=2, max=100_000)
        jobs = [("frontend", front_m, wave, "waveform", "frontend_out", {0: batch, 1: samples}),
                ("backbone", network_m, front, "frontend_out", "frames",
                 {0: batch, front.dim() - 1: front_time})]
    else:
        jobs = [("backbone", frames_m, wave, "waveform", "frames", {0: batch, 1: samples})]
    jobs += [
        ("pooling", pooling_m, frames, "frames", "embedding", {0: batch, 1: time_dim}),
        ("head", head_m, embedding, "embedding", "audioset_probs", {0: batch}),
    ]
    seconds = {}
    for role, module, example, in_name, out_name, dyn in jobs:
        start = time.perf_counter()
        _export(module, example, out_dir / FILES[role], in_name, out_name, dyn)
        seconds[role] = round(time.perf_counter() - start, 2)
        log.info("exported %s in %.1f s", FILES[role], seconds[role])
    if hasattr(frames_m, "gain_graph"):  # the front end's log-mel at another loudness
        start = time.perf_counter()
        save_reproducible(frames_m.gain_graph(), out_dir / FILES["gain"])
        seconds["gain"] = round(time.perf_counter() - start, 2)
    return seconds


def build_manifest(spec: BackboneSpec, out_dir: Path, roles: list[str], *,
                   checkpoint: dict[str, Any], chunk_samples: int, window_chunks: int,
                   ) -> Manifest:
    """The manifest for the files of ``roles`` already present in ``out_dir``.

    Nothing time- or machine-dependent goes in (no timestamps, no timings): the same checkpoint
    and code give the same manifest; those go to ``.workbench/export.json``.
    """
    return Manifest(
        backbone=Backbone(spec.name, spec.frame_dim, spec.embedding_dim, spec.description,
                          checkpoint),
        input=InputSpec(spec.sample_rate, spec.min_samples, extra={
            "layout": "waveform [batch, samples], mono, full scale ±1.0",
            "short_input": "zero-padded to min_samples inside the first graph (frontend, "
                           "else backbone)"}),
        streaming=Streaming(chunk_samples, window_chunks, extra={
            "note": "the front end (frontend.onnx, when listed: waveform -> log-mel) runs once "
                    "per chunk (the hop); backbone.onnx reads its output (else the waveform); "
                    "a window pools the frame features of its last window_chunks chunks"}),
        opset=OPSET,
        files={role: entry for r, name in roles_files(roles).items()
               for role, entry in manifest_entries(out_dir, r, name).items()},
        tools=tool_versions(),
    )


def roles_files(roles: list[str]) -> dict[str, str]:
    names = {**FILES, "labels": "labels.txt"}
    return {role: names[role] for role in roles}


def export_model_dir(spec: BackboneSpec, parts: tuple, out_dir: Path, *,
                     checkpoint: dict[str, Any],
                     chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                     window_chunks: int = DEFAULT_WINDOW_CHUNKS) -> Manifest:
    """Export into a temporary folder beside ``out_dir``, then move the files in; manifest last.

    A crash mid-export leaves ``out_dir`` as it was: never half-written ONNX files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    try:
        seconds = export_parts(spec, parts, tmp)
        atomic.write_text(tmp / "labels.txt", "\n".join(audioset_labels()) + "\n")
        for name in [*FILES.values(), "labels.txt"]:
            if not (tmp / name).is_file():  # no front end graph for this backbone
                for stale in (out_dir / name, data_path(out_dir / name)):
                    stale.unlink(missing_ok=True)
                continue
            if data_path(tmp / name).is_file():
                os.replace(data_path(tmp / name), data_path(out_dir / name))
            else:
                data_path(out_dir / name).unlink(missing_ok=True)  # an older export's weights
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    chunk_samples = int(round(chunk_seconds * spec.sample_rate))
    roles = [r for r in FILES if r in seconds]  # the graphs this export wrote
    manifest = build_manifest(spec, out_dir, [*roles, "labels"],
                              checkpoint=checkpoint, chunk_samples=chunk_samples,
                              window_chunks=window_chunks)
    atomic.write_json(out_dir / WORKBENCH / "export.json",
                      {"created": datetime.now(UTC).isoformat(timespec="seconds"),
                       "export_seconds": seconds})
    manifest.write(out_dir)
    return manifest


def export_log(model_dir: Path) -> dict[str, Any]:
    """``.workbench/export.json`` of the last export (when and how long), or {}."""
    import json

    path = Path(model_dir) / WORKBENCH / "export.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def check_against_torch(parts: tuple, out_dir: Path, seconds: float = 2.0) -> dict[str, float]:
    """Quick self-check after export: max abs error of ONNX vs torch on seeded noise."""
    import onnxruntime as ort

    frames_m, pooling_m, _ = parts
    wave = (torch.randn(1, int(seconds * 32000), generator=torch.Generator().manual_seed(0))
            * 0.1)
    with torch.no_grad():
        ref = pooling_m(frames_m(wave)).numpy()
    x = wave.numpy()
    for role in ("frontend", "backbone", "pooling"):
        if (out_dir / FILES[role]).is_file():
            sess = ort.InferenceSession(str(out_dir / FILES[role]))
            x = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = x
    return {"embedding_max_abs_error": float(np.abs(got - ref).max())}
