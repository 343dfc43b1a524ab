"""Fitted sklearn pipeline → ``classifier.onnx`` (skl2onnx) → one merged ``end_to_end.onnx``.

``classifier.onnx``: input ``embedding`` float32 ``[batch, E]`` → one output ``probabilities``
float32 ``[batch, 2]`` (column 1 = p(danger)); no ZipMap, no label output, default opset 18 like
the backbone and ``ai.onnx.ml`` 3.

``end_to_end.onnx``: ``waveform [batch, samples]`` → ``p_danger [batch]``, ``embedding``,
``audioset_probs``; built with ``onnx.compose.merge_models`` from the model dir's backbone,
pooling, head and classifier. It computes the device's features: the waveform is cut in-graph
into ``streaming.chunk_samples`` chunks (last one zero-padded), the backbone runs per chunk, and
the frames of all chunks are pooled as one window — so for a 5 s clip (one device window) it
equals ``edge_runtime.features.embed_audio`` and the classifier sees the features it was
trained on. Longer input is pooled as one long window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, version_converter
from sklearn.pipeline import Pipeline

from export.reproducible import save_reproducible

if TYPE_CHECKING:
    from edge_runtime.manifest import Manifest

log = logging.getLogger(__name__)

OPSET = 18
ML_OPSET = 3
CLASSIFIER_OUTPUT = "probabilities"
DANGER_COLUMN = 1  # to_onnx requires classes_ == [0, 1]: column 1 is p(danger)


def sklearn_to_onnx(pipeline: Pipeline, dim: int, input_name: str = "embedding",
                    output_name: str = CLASSIFIER_OUTPUT, opset: int = OPSET) -> onnx.ModelProto:
    """A fitted scaler+classifier pipeline → ONNX ``input_name [batch, dim]`` →
    ``output_name [batch, n_classes]`` probabilities (no ZipMap, no label output)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = pipeline.steps[-1][1]
    model = convert_sklearn(
        pipeline, name="danger_classifier",
        initial_types=[(input_name, FloatTensorType([None, dim]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
    )
    probs = [o.name for o in model.graph.output if "prob" in o.name]
    if len(probs) != 1:
        raise ValueError(f"unexpected skl2onnx outputs {[o.name for o in model.graph.output]}")
    model = normalise_opsets(only_output(model, probs[0], output_name), opset)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = len(clf.classes_)
    return model


def to_onnx(pipeline: Pipeline, dim: int, opset: int = OPSET) -> onnx.ModelProto:
    """Convert a fitted binary scaler+classifier pipeline; keep only the probability tensor."""
    clf = pipeline.steps[-1][1]
    if list(clf.classes_) != [0, 1]:
        raise ValueError(f"classifier classes {list(clf.classes_)}; expected [0, 1] (safe, danger)")
    model = sklearn_to_onnx(pipeline, dim, opset=opset)
    model.doc_string = "embedding [batch, E] -> probabilities [batch, 2]; column 1 = p(danger)"
    onnx.checker.check_model(model, full_check=True)
    return model


def only_output(model: onnx.ModelProto, name: str, new_name: str) -> onnx.ModelProto:
    """Keep graph output ``name`` (renamed ``new_name``) and drop nodes nothing needs."""
    graph = model.graph
    keep = [o for o in graph.output if o.name == name]
    for node in graph.node:
        node.output[:] = [new_name if out == name else out for out in node.output]
    keep[0].name = new_name
    del graph.output[:]
    graph.output.extend(keep)
    needed, nodes = {new_name}, []
    for node in reversed(graph.node):
        if any(out in needed for out in node.output):
            nodes.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(nodes))
    used = {i for n in graph.node for i in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model


def normalise_opsets(model: onnx.ModelProto, opset: int = OPSET) -> onnx.ModelProto:
    """Declare exactly ``{"": opset, "ai.onnx.ml": 3}``, like the backbone.

    skl2onnx declares the lowest versions its ops need (and sometimes a domain twice); default
    domain ops are upgraded with ``onnx.version_converter``. The ai.onnx.ml ops it emits
    (Scaler, LinearClassifier, TreeEnsembleClassifier) mean the same from ml opset 1 to 3.
    """
    versions: dict[str, int] = {}
    for imp in model.opset_import:
        versions[imp.domain or ""] = max(versions.get(imp.domain or "", 0), imp.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    if versions.get("", opset) < opset:
        model = version_converter.convert_version(model, opset)
    unknown = set(versions) - {"", "ai.onnx.ml"}
    if unknown:
        raise ValueError(f"classifier uses unexpected opset domains {sorted(unknown)}")
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", opset),
                               helper.make_opsetid("ai.onnx.ml", ML_OPSET)])
    return model


def save_atomic(model: onnx.ModelProto, path: Path) -> None:
    """Write one self-contained ONNX file through a temporary name (never half-written; umask
    honoured), reproducibly."""
    save_reproducible(model, path, external=False)


def p_danger_tail(ir_version: int, opsets: list) -> onnx.ModelProto:
    """Tiny graph: probabilities [batch, 2] → p_danger [batch] (column 1)."""
    index = helper.make_tensor("danger_column", TensorProto.INT64, [], [DANGER_COLUMN])
    node = helper.make_node("Gather", [CLASSIFIER_OUTPUT, "danger_column"], ["p_danger"], axis=1)
    graph = helper.make_graph(
        [node], "p_danger",
        [helper.make_tensor_value_info(CLASSIFIER_OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("p_danger", TensorProto.FLOAT, ["batch"])],
        initializer=[index])
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def chunker_graph(chunk: int, ir_version: int, opsets: list) -> onnx.ModelProto:
    """waveform [B, S] → chunks [B·n, chunk] (n = max(1, ceil(S / chunk)), zero-padded) and
    batch_size [1] (int64), so the frames can be regrouped per input after the backbone."""
    ints = {name: helper.make_tensor(name, TensorProto.INT64, [1], [value]) for name, value in
            (("c_zero", 0), ("c_one", 1), ("c_chunk", chunk), ("c_chunk_m1", chunk - 1),
             ("c_minus1", -1))}
    nodes = [
        helper.make_node("Shape", ["waveform"], ["batch_size"], start=0, end=1),
        helper.make_node("Shape", ["waveform"], ["n_samples"], start=1, end=2),
        helper.make_node("Add", ["n_samples", "c_chunk_m1"], ["n_ceil_num"]),
        helper.make_node("Div", ["n_ceil_num", "c_chunk"], ["n_ceil"]),
        helper.make_node("Max", ["n_ceil", "c_one"], ["n_chunks"]),
        helper.make_node("Mul", ["n_chunks", "c_chunk"], ["n_padded"]),
        helper.make_node("Sub", ["n_padded", "n_samples"], ["n_pad"]),
        helper.make_node("Concat", ["c_zero", "c_zero", "c_zero", "n_pad"], ["pads"], axis=0),
        helper.make_node("Pad", ["waveform", "pads"], ["padded"]),
        helper.make_node("Concat", ["c_minus1", "c_chunk"], ["chunk_shape"], axis=0),
        helper.make_node("Reshape", ["padded", "chunk_shape"], ["chunks"]),
    ]
    graph = helper.make_graph(
        nodes, "chunker",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", "samples"])],
        [helper.make_tensor_value_info("chunks", TensorProto.FLOAT, ["batch_chunks", chunk]),
         helper.make_tensor_value_info("batch_size", TensorProto.INT64, [1])],
        initializer=list(ints.values()))
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def regroup_graph(frame_dim: int, ir_version: int, opsets: list) -> onnx.ModelProto:
    """frames [B·n, t, D] + batch_size [1] → window_frames [B, n·t, D] (chunks in time order)."""
    tail = helper.make_tensor("c_rest", TensorProto.INT64, [2], [-1, frame_dim])
    nodes = [helper.make_node("Concat", ["batch_size", "c_rest"], ["window_shape"], axis=0),
             helper.make_node("Reshape", ["frames", "window_shape"], ["window_frames"])]
    graph = helper.make_graph(
        nodes, "regroup",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT,
                                       ["batch_chunks", "t", frame_dim]),
         helper.make_tensor_value_info("batch_size", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("window_frames", TensorProto.FLOAT,
                                       ["batch", "time", frame_dim])],
        initializer=[tail])
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def check_opsets(models: dict[str, onnx.ModelProto]) -> dict[str, int]:
    """All parts must agree on each domain's opset version; returns the union."""
    union: dict[str, int] = {}
    for name, model in models.items():
        for imp in model.opset_import:
            domain = imp.domain or ""
            if union.setdefault(domain, imp.version) != imp.version:
                raise ValueError(f"{name}: opset {domain or 'ai.onnx'} {imp.version} differs from "
                                 f"{union[domain]} in another part; cannot merge")
    return union


def aligned(model: onnx.ModelProto, ir_version: int, opsets: dict[str, int],
            prefix: str) -> onnx.ModelProto:
    """Same IR version and opset imports as the rest; internal names prefixed (not I/O)."""
    model = compose.add_prefix(model, prefix, rename_inputs=False, rename_outputs=False)
    model.ir_version = ir_version
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    return model


def merge_end_to_end(model_dir: Path, classifier: onnx.ModelProto,
                     manifest: Manifest | None = None) -> onnx.ModelProto:
    """chunker → [frontend →] backbone → regroup → pooling → (head, classifier → p_danger).

    ``manifest`` describes the files in ``model_dir`` (default: its own manifest.json; pass it
    when staging a model dir whose manifest is not written yet).
    """
    from edge_runtime.manifest import load_manifest

    manifest = manifest or load_manifest(model_dir)
    roles = ("frontend", "backbone", "pooling", "head") if "frontend" in manifest.files else (
        "backbone", "pooling", "head")
    parts = {**{role: onnx.load(str(manifest.path(model_dir, role))) for role in roles},
             "classifier": classifier}
    opsets = check_opsets(parts)
    ir = max(m.ir_version for m in parts.values())
    opset_ids = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    tail = aligned(p_danger_tail(ir, opset_ids), ir, opsets, "tail/")
    chunker = aligned(chunker_graph(manifest.streaming.chunk_samples, ir, opset_ids),
                      ir, opsets, "chunker/")
    regroup = aligned(regroup_graph(manifest.backbone.frame_dim, ir, opset_ids),
                      ir, opsets, "regroup/")
    graphs = {role: aligned(model, ir, opsets, f"{role}/") for role, model in parts.items()}
    backbone, pooling, head, clf = (graphs[r] for r in ("backbone", "pooling", "head",
                                                        "classifier"))
    if "frontend" in graphs:  # chunks → log-mel → frames
        merged = compose.merge_models(chunker, graphs["frontend"],
                                      io_map=[("chunks", "waveform")],
                                      outputs=["frontend_out", "batch_size"])
        merged = compose.merge_models(merged, backbone,
                                      io_map=[("frontend_out", "frontend_out")],
                                      outputs=["frames", "batch_size"])
    else:
        merged = compose.merge_models(chunker, backbone, io_map=[("chunks", "waveform")],
                                      outputs=["frames", "batch_size"])
    merged = compose.merge_models(merged, regroup, io_map=[("frames", "frames"),
                                                           ("batch_size", "batch_size")],
                                  outputs=["window_frames"])
    merged = compose.merge_models(merged, pooling, io_map=[("window_frames", "frames")],
                                  outputs=["embedding"])
    merged = compose.merge_models(merged, head, io_map=[("embedding", "embedding")],
                                  outputs=["embedding", "audioset_probs"])
    merged = compose.merge_models(merged, clf, io_map=[("embedding", "embedding")],
                                  outputs=["embedding", "audioset_probs", CLASSIFIER_OUTPUT])
    merged = compose.merge_models(merged, tail, io_map=[(CLASSIFIER_OUTPUT, CLASSIFIER_OUTPUT)],
                                  outputs=["p_danger", "embedding", "audioset_probs"])
    outputs = {o.name: o for o in merged.graph.output}
    ordered = [outputs[name] for name in ("p_danger", "embedding", "audioset_probs")]
    del merged.graph.output[:]
    merged.graph.output.extend(ordered)
    del merged.opset_import[:]  # merge_models repeats each domain once per merge
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    merged.graph.name = "edge_detect_end_to_end"
    merged.doc_string = ("waveform [batch, samples] 32 kHz mono -> p_danger [batch], "
                         "embedding [batch, E], audioset_probs [batch, 527]")
    onnx.checker.check_model(merged)
    return merged


def run_classifier_onnx(path: Path, x: np.ndarray, head_probs: np.ndarray | None = None
                        ) -> np.ndarray:
    """First output of ``classifier.onnx`` on embeddings ``x`` (binary: probabilities [N, 2];
    a class model that reads the head also takes its ``head_probs``), for checks and tests."""
    import onnxruntime as ort

    from edge_runtime.classes import HEAD_PROBS_INPUT

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"embedding": np.asarray(x, np.float32)}
    if head_probs is not None:
        feed[HEAD_PROBS_INPUT] = np.asarray(head_probs, np.float32)
    return sess.run(None, feed)[0]
