"""A tiny hand-built model dir with the real contract, for fast runtime tests.

backbone: waveform [B, S] → frames [B, S/3200, 1] = log frame energy (10 frames per 1 s chunk);
pooling: max over time → embedding [B, 1]; classifier: p(danger) = sigmoid(2·(logE + 5)) as a
skl2onnx-like pair of outputs (int64 label, float probabilities [B, 2]); head: 3 made-up tags.
So "danger" = loud (RMS ≳ 0.08), "safe" = quiet. No learned weights; plumbing only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.manifest import (
    Backbone,
    ClassifierSpec,
    ClassSpec,
    FileEntry,
    InputSpec,
    Manifest,
    Streaming,
    file_entry,
)

SR = 32000
FRAME = 3200
TAGS = ["Loud noise", "Speech", "Silence"]


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def backbone_graph() -> onnx.GraphProto:
    nodes = [
        helper.make_node("Reshape", ["waveform", "shape"], ["framed"]),
        helper.make_node("Mul", ["framed", "framed"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["energy"], keepdims=1),
        helper.make_node("Add", ["energy", "eps"], ["energy_eps"]),
        helper.make_node("Log", ["energy_eps"], ["frames"]),
    ]
    return helper.make_graph(
        nodes, "tiny_backbone",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", "time", 1])],
        [_const("shape", np.array([0, -1, FRAME], np.int64)),
         _const("axes", np.array([2], np.int64)), _const("eps", np.float32(1e-8))])


def pooling_graph() -> onnx.GraphProto:
    nodes = [helper.make_node("ReduceMax", ["frames", "axes"], ["embedding"], keepdims=0)]
    return helper.make_graph(
        nodes, "tiny_pooling",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["batch", "time", 1])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1])],
        [_const("axes", np.array([1], np.int64))])


def classifier_graph() -> onnx.GraphProto:
    nodes = [
        helper.make_node("Gemm", ["embedding", "w", "b"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    return helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [_const("w", np.array([[2.0]], np.float32)), _const("b", np.array([10.0], np.float32)),
         _const("one", np.float32(1.0))])


def head_graph() -> onnx.GraphProto:
    nodes = [helper.make_node("Gemm", ["embedding", "w", "b"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["audioset_probs"])]
    return helper.make_graph(
        nodes, "tiny_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 1])],
        [helper.make_tensor_value_info("audioset_probs", TensorProto.FLOAT, ["batch", 3])],
        [_const("w", np.array([[1.0, 0.0, -1.0]], np.float32)),
         _const("b", np.array([5.0, 0.0, -5.0], np.float32))])


def build_tiny_model(out: Path, threshold: float = 0.5) -> Path:
    """Write the tiny model dir (manifest with sha256 of every file) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, graph in [("backbone", backbone_graph()), ("pooling", pooling_graph()),
                        ("classifier", classifier_graph()), ("head", head_graph())]:
        _save(graph, out / f"{name}.onnx")
    (out / "labels.txt").write_text("\n".join(TAGS) + "\n", encoding="utf-8")
    files = {role: file_entry(out, f"{role}.onnx")
             for role in ("backbone", "pooling", "classifier", "head")}
    files["labels"] = file_entry(out, "labels.txt")
    Manifest(backbone=Backbone("tiny-energy", frame_dim=1, embedding_dim=1),
             input=InputSpec(SR, min_samples=FRAME), streaming=Streaming(SR, window_chunks=5),
             files=files,
             classifier=ClassifierSpec("hand-set logistic on log energy", threshold=threshold,
                                       output="probabilities")).write(out)
    return out


def tiny_manifest(*, trained_on: dict | None = None, mapping: dict | None = None,
                  classes: tuple[list[str], list[float]] | None = None) -> Manifest:
    """The tiny model's manifest in memory (no files): for unit tests of code that reads a
    manifest's classifier and classes sections."""
    files = {role: FileEntry(f"{role}.onnx", "0" * 64, 0) for role in ("backbone", "pooling")}
    return Manifest(
        backbone=Backbone("tiny-energy", frame_dim=1, embedding_dim=1),
        input=InputSpec(SR, min_samples=FRAME), streaming=Streaming(SR, window_chunks=5),
        files=files,
        classifier=(ClassifierSpec("tiny", trained_on=trained_on, mapping=mapping)
                    if trained_on is not None or mapping is not None else None),
        classes=None if classes is None else ClassSpec(tuple(classes[0]), tuple(classes[1])))


def tone(seconds: float, amp: float = 0.5, freq: float = 1000.0, sr: int = SR) -> np.ndarray:
    """A loud sine: 'danger' for the tiny model."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hiss(seconds: float, amp: float = 0.005, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Quiet noise: 'safe' for the tiny model."""
    rng = np.random.default_rng(seed)
    return (amp * rng.standard_normal(int(round(seconds * sr)))).astype(np.float32)
