"""Static int8 quantization of a model dir's backbone, calibrated on real audio.

Method: ``onnxruntime.quantization.quantize_static`` in QDQ format, per-channel int8 weights,
uint8 activations (the U8S8 kernels onnxruntime fuses into QLinearConv on x86 and ARM), MinMax
calibration on what the device actually feeds the backbone: 1 s chunks (``streaming.
chunk_samples``) of 32 kHz audio, read and cut with the runtime's own functions.

The log-mel front end stays float. Its power spectrum spans ~12 decades, so one int8 scale
would flatten everything but the loudest bins. :func:`front_end_nodes` finds it in the
dynamo-exported graph by structure, not by name: every node upstream of the ``Log`` (padding,
STFT conv(s), power Pow/Mul/Add, mel MatMul, Clip/Add) plus the nodes after the ``Log`` up to and
including the first ``Conv`` (dB scaling, transposes, Cnn14's ``bn0``, the first network conv).
Those are passed as ``nodes_to_exclude``. Keeping that first conv float too was measured: on mn04
(real weights, ESC-10 held-out clips) it lifts the int8-vs-fp32 embedding cosine from 0.978 to
0.983 mean (min 0.961 → 0.968) and costs little time (one input channel).

Two rewrites make int8 pay (measured, benchmarks/README.md "Static int8 quantization"): the
backbone's non-overlapping average pools become depthwise convs before quantizing
(:func:`pools_as_depthwise`: onnxruntime's ``QLinearAveragePool`` took ~10 % of Cnn14's int8
time, twice the float pools; a depthwise ``QLinearConv`` does the same pooling for a fifth),
and the pooling graph's large matrix product (Cnn14's 2048 × 2048 fc1, 16.8 MB of float
weights read on every hop) is dynamically quantized (:func:`quantize_pooling`).

Before anything is written, the int8 backbone is compared with the fp32 one on held-out clips
(never used for calibration) through the daemon's own streaming path
(:func:`edge_runtime.features.embed_audio`); below the cosine thresholds nothing is written.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.external_data_helper import load_external_data_for_model
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from tqdm import tqdm

from edge_runtime.audio import AudioError
from edge_runtime.features import embed_audio, to_chunks
from edge_runtime.loudness import GAIN_INPUTS, frame_powers, raise_db
from edge_runtime.manifest import Manifest, data_name, file_entry, load_manifest
from edge_runtime.options import THRESHOLD_FALLBACK
from edge_runtime.sessions import data_role, load_sessions
from edge_runtime.sources import AUDIO_SUFFIXES
from export.reproducible import manifest_entries, save_reproducible
from training.bundle import END_TO_END
from training.dataset import load_audio as training_load_audio

log = logging.getLogger(__name__)

# Chosen by measurement on ESC-10 held-out clips (benchmarks/README.md): good int8 models gave
# mn04 (real weights) 0.983 mean / 0.968 min, random-init Cnn14 0.9995 / 0.999; quantizing the
# front end too gave mn04 0.47 / 0.13. The bars leave margin for other audio, catch breakage.
MIN_MEAN_COSINE = 0.97
MIN_MIN_COSINE = 0.90
STOP_OPS = ("Conv",)
REBUILT_ROLES = ("end_to_end",)  # graphs embedding the backbone: rebuilt from the int8 one
REPLACED_ROLES = ("backbone", data_role("backbone"))  # written by the quantizer
POOLED_ROLES = ("pooling", data_role("pooling"))  # replaced when the pooling is quantized
POOLING_MIN_WEIGHTS = 1 << 20  # matrix products this big in the pooling graph go int8


class QuantizationRefused(ValueError):
    """The int8 model is too far from fp32 (or cannot be built); nothing was written."""


@dataclass
class CheckResult:
    """Cosine of int8 vs fp32 window embeddings on held-out clips."""

    files: int
    windows: int
    mean_cosine: float
    min_cosine: float
    per_file: list[float] = field(default_factory=list)

    def passed(self, min_mean: float, min_min: float) -> bool:
        return self.mean_cosine >= min_mean and self.min_cosine >= min_min


# ------------------------------------------------------------------------------------------
# Graph: which nodes are the front end
# ------------------------------------------------------------------------------------------


def front_end_nodes(model: onnx.ModelProto, in_graph: bool = True) -> list[str]:
    """Names of the log-mel front-end nodes: ancestors of ``Log``, then nodes through the next Conv.

    ``in_graph`` False (the front end is its own graph): the nodes from the graph's input
    through its first Conv. Raises ValueError when an in-graph front end has no ``Log`` node
    (not a log-mel backbone).
    """
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    keep: set[str] = set()
    if in_graph:
        logs = [n for n in nodes if n.op_type == "Log"]
        if not logs:
            raise ValueError("backbone graph has no Log node: cannot locate the log-mel "
                             "front end")
        stack = list(logs)
        while stack:  # upstream: everything the Log depends on
            node = stack.pop()
            if node.name in keep:
                continue
            keep.add(node.name)
            stack.extend(producer[i] for i in node.input if i in producer)
        starts = [o for n in logs for o in n.output]
    else:
        starts = [i.name for i in model.graph.input]
    stack = [c for name in starts for c in consumers.get(name, [])]
    while stack:  # downstream: up to and including the first Conv of the network proper
        node = stack.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        if node.op_type not in STOP_OPS:
            stack.extend(c for o in node.output for c in consumers.get(o, []))
    return [n.name for n in nodes if n.name in keep]


# ------------------------------------------------------------------------------------------
# Audio: the runtime's loading path, then the device's chunks
# ------------------------------------------------------------------------------------------


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``, decoded as the device decodes files."""
    return training_load_audio(path, sample_rate)


def readable(path: Path, sample_rate: int) -> np.ndarray | None:
    """The file's audio, or None after a one-line warning naming it (bad files are skipped)."""
    try:
        return load_audio(path, sample_rate)
    except AudioError as exc:
        log.warning("%s; skipped", exc)
        return None


def audio_files(data_dir: Path) -> list[Path]:
    """Audio files under ``data_dir`` (recursive), sorted."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such folder of audio files")
    files = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ValueError(f"{data_dir}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))})")
    return files


def split_files(files: Sequence[Path], n_calib: int, n_check: int,
                seed: int = 0) -> tuple[list[Path], list[Path]]:
    """Disjoint (calibration, held-out check) subsets, shuffled with ``seed``."""
    if len(files) < 2:
        raise ValueError("need at least 2 audio files (calibration and a held-out check)")
    order = list(files)
    random.Random(seed).shuffle(order)
    n_check = max(1, min(n_check, len(order) // 4 or 1))
    check = order[:n_check]
    calib = order[n_check : n_check + n_calib]
    return calib, check


def raised(log_mels: np.ndarray, audio: np.ndarray, sample_rate: int, graph: Path,
           target_dbfs: float, max_db: float) -> np.ndarray:
    """Each chunk's log-mel ``[n, mels, T]`` raised by ``gain.onnx`` as its audio ``[n, S]``
    asks (:func:`edge_runtime.loudness.raise_db` of its frame powers)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    db = np.array([raise_db(frame_powers(a, sample_rate), target_dbfs, max_db) for a in audio],
                  np.float32)
    log_mel, gain_db = GAIN_INPUTS
    return np.concatenate([sess.run(None, {log_mel: log_mels[i : i + 64],
                                           gain_db: db[i : i + 64]})[0]
                           for i in range(0, len(log_mels), 64)])


class ChunkReader(CalibrationDataReader):
    """Feeds the backbone's input as the device does: batches of 1 s chunks (where the model
    has a loudness gain, each chunk's log-mel raised as a window of it would be)."""

    def __init__(self, files: Sequence[Path], sample_rate: int, chunk_samples: int,
                 input_name: str = "waveform", batch: int = 8,
                 frontend: Path | None = None,
                 gain: tuple[Path, float, float] | None = None) -> None:
        """``frontend``: the model dir's front end graph; the backbone then reads its output.
        ``gain``: ``(gain.onnx, target dBFS, most dB)`` of a model whose windows are raised
        (:mod:`edge_runtime.loudness`); each chunk is raised as a window of it would be."""
        chunks = []
        for path in tqdm(files, desc="calibration audio", unit="file", leave=False):
            audio = readable(path, sample_rate)
            if audio is not None:
                chunks.append(to_chunks(audio, chunk_samples))
        if not chunks:
            raise ValueError("no readable calibration audio among "
                             f"{len(files)} files (first: {files[0]})")
        self.chunks = np.concatenate(chunks, axis=0)
        if frontend is not None:
            import onnxruntime as ort

            sess = ort.InferenceSession(str(frontend), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            audio = self.chunks
            self.chunks = np.concatenate([sess.run(None, {name: audio[i : i + 64]})[0]
                                          for i in range(0, len(audio), 64)])
            if gain is not None:
                self.chunks = raised(self.chunks, audio, sample_rate, *gain)
        self.input_name = input_name
        self.batch = batch
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for i in tqdm(range(0, len(self.chunks), self.batch), desc="calibrating",
                      unit="batch", leave=False):
            yield {self.input_name: self.chunks[i : i + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._batches()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


# ------------------------------------------------------------------------------------------
# Quantize, check, write
# ------------------------------------------------------------------------------------------


def pools_as_depthwise(model: onnx.ModelProto) -> dict[str, int]:
    """Rewrite the graph's non-overlapping ``AveragePool`` nodes, in place, before quantizing.

    A k×k pool with stride k and no padding becomes a depthwise ``Conv`` (group = channels,
    weights 1/(k·k), same node name): int8, onnxruntime runs it as a depthwise ``QLinearConv``
    instead of its much slower ``QLinearAveragePool``.
    A 1×1 stride-1 pool (Cnn14's last block) is the identity and is removed (unless it makes a
graph output). Other pools and
    pools whose channel count shape inference cannot tell are left alone. ``model`` may hold
    its weights externally (the rewrite needs only the graph). Returns the counts.
    """
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(
        onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import,
                        graph=onnx.helper.make_graph(graph.node, graph.name, graph.input,
                                                     graph.output, graph.initializer,
                                                     value_info=graph.value_info)))
    channels = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input]:
        dims = info.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[1].HasField("dim_value"):
            channels[info.name] = dims[1].dim_value
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    nodes, counts = [], {"depthwise": 0, "identity_removed": 0}
    for node in graph.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        if node.op_type != "AveragePool":
            nodes.append(node)
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attrs.get("kernel_shape", []))
        plain = (list(attrs.get("strides", [1] * len(kernel))) == kernel
                 and not any(attrs.get("pads", [])) and not attrs.get("ceil_mode", 0)
                 and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET") and len(kernel) == 2)
        if plain and kernel == [1, 1] and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            counts["identity_removed"] += 1
        elif plain and node.input[0] in channels:
            c, area = channels[node.input[0]], kernel[0] * kernel[1]
            weight = numpy_helper.from_array(np.full((c, 1, *kernel), 1.0 / area, np.float32),
                                             f"{node.name}.depthwise_weight")
            graph.initializer.append(weight)
            nodes.append(onnx.helper.make_node("Conv", [node.input[0], weight.name],
                                               list(node.output), name=node.name, group=c,
                                               kernel_shape=kernel, strides=kernel))
            counts["depthwise"] += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return counts


def quantize_backbone(src: Path, dst: Path, reader: ChunkReader,
                      exclude: list[str]) -> dict[str, int]:
    """QDQ per-channel static int8 of ``src`` into ``dst`` (front-end nodes excluded), its
    average pools first rewritten by :func:`pools_as_depthwise`; returns the rewrite counts."""
    model = onnx.load(str(src), load_external_data=False)
    rewrites = pools_as_depthwise(model)
    load_external_data_for_model(model, str(src.parent))
    quantize_static(
        model, str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
        reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude, calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    del model
    # as exported backbones: no debug metadata, big weights in a memory-mapped <dst>.data
    save_reproducible(onnx.load(str(dst)), dst)
    onnx.checker.check_model(str(dst))
    return rewrites


def gemm_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite plain ``Gemm`` nodes (alpha = beta = 1, no transposed A, constant B) as
    ``MatMul`` (+ ``Add`` of the bias), in place, so dynamic quantization takes them; returns
    how many."""
    init = {t.name: t for t in model.graph.initializer}
    nodes, count = [], 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in init or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            nodes.append(node)
            continue
        if attrs.get("transB", 0):
            weight = init[node.input[1]]
            weight.CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(numpy_helper.to_array(weight).T), weight.name))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = f"{node.output[0]}_matmul" if bias else node.output[0]
        nodes.append(onnx.helper.make_node("MatMul", list(node.input[:2]), [product],
                                           name=node.name))
        if bias:
            nodes.append(onnx.helper.make_node("Add", [product, bias], list(node.output),
                                               name=f"{node.name}_bias"))
        count += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return count


def quantize_pooling(src: Path, dst: Path, min_weights: int = POOLING_MIN_WEIGHTS) -> int:
    """Dynamic int8 (int8 weights, activations quantized per call) of the pooling graph's
    matrix products with at least ``min_weights`` weights (Cnn14's fc1: 2048 × 2048) into
    ``dst``; returns how many (0: nothing written, the float graph stays)."""
    model = onnx.load(str(src))
    gemm_as_matmul(model)
    init = {t.name: t for t in model.graph.initializer}
    big = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in init
           and int(np.prod(init[n.input[1]].dims)) >= min_weights]
    if not big:
        return 0
    quantize_dynamic(model, str(dst), op_types_to_quantize=["MatMul"], nodes_to_quantize=big,
                     per_channel=False, reduce_range=False, weight_type=QuantType.QInt8)
    save_reproducible(onnx.load(str(dst)), dst)
    onnx.checker.check_model(str(dst))
    return len(big)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``[n, d]`` arrays (0 where a row is all zeros)."""
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 0.0)


def compare_embeddings(fp32_dir: Path, int8_dir: Path, files: Sequence[Path],
                       threads: int | None = None) -> CheckResult:
    """int8 vs fp32 window embeddings of ``files`` through the daemon's streaming path."""
    ref = load_sessions(fp32_dir, "cpu", threads, with_classifier=False)
    new = load_sessions(int8_dir, "cpu", threads, with_classifier=False)
    per_file, all_cos = [], []
    for path in tqdm(files, desc="held-out check", unit="file", leave=False):
        audio = readable(path, ref.sample_rate)
        if audio is None:
            continue
        cos = cosine_rows(embed_audio(ref, audio)[0], embed_audio(new, audio)[0])
        per_file.append(round(float(cos.mean()), 6))
        all_cos.extend(cos.tolist())
    if not all_cos:
        raise ValueError(f"none of the {len(files)} held-out files could be read")
    return CheckResult(len(per_file), len(all_cos), float(np.mean(all_cos)), float(np.min(all_cos)),
                       per_file)


def esc50_root(data_dir: Path) -> Path | None:
    """The ESC-50-layout root (``meta/esc50.csv``) at or just above ``data_dir``, if any."""
    for root in (data_dir, data_dir.parent):
        if (root / "meta" / "esc50.csv").is_file():
            return root
    return None


def _summary(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    from training.evaluate import metrics

    at_half, at_t = metrics(y, p, 0.5), metrics(y, p, threshold)
    return {"accuracy_at_0.5": at_half["accuracy"], "roc_auc": at_half["roc_auc"],
            "accuracy_at_threshold": at_t["accuracy"],
            "danger_recall_at_threshold": at_t["danger_recall"],
            "false_alarms_at_threshold": at_t["false_alarms"]}


def classifier_delta(fp32_dir: Path, int8_dir: Path, root: Path, manifest: Manifest,
                     threads: int | None = None) -> dict[str, Any]:
    """Leave-one-fold-out accuracy and AUC with fp32 vs int8 embeddings, same clips and folds.

    Three rows: ``fp32`` and ``int8`` (classifier refit per fold on that model's embeddings, as
    ``edge-train build`` would) and ``int8_with_fp32_classifier`` (fit on fp32 embeddings of the
    training folds, applied to int8 embeddings of the test fold: what the int8 dir ships).
    """
    from sklearn.base import clone

    from training import classifiers, evaluate
    from training.dataset import read_dataset
    from training.defaults import kind_of
    from training.embed import embed_clips
    from training.mapping import manifest_mapping

    mapping = manifest_mapping(manifest)
    clips = read_dataset(root, mapping)
    cache = fp32_dir / ".workbench"
    e32 = embed_clips(fp32_dir, clips, cache_dir=cache if cache.is_dir() else None,
                      threads=threads, measure_offline=False)
    e8 = embed_clips(int8_dir, clips, cache_dir=None, threads=threads, measure_offline=False)
    if e32.filename.tolist() != e8.filename.tolist():
        raise ValueError(f"{root}: fp32 and int8 embedded different clips; cannot compare")
    kind = kind_of(manifest)
    threshold = manifest.threshold if manifest.threshold is not None else THRESHOLD_FALLBACK
    y, folds = e32.label, e32.fold
    out: dict[str, Any] = {"data": str(root), "clips": int(len(set(e32.filename))),
                           "classifier": kind, "threshold": threshold}
    for name, emb in (("fp32", e32), ("int8", e8)):
        oof = evaluate.cross_validate(classifiers.make_pipeline(kind), emb.x, y, folds)[0]
        out[name] = _summary(y, oof, threshold)
    cross = np.zeros(len(y))
    for fold in np.unique(folds):
        test = folds == fold
        model = clone(classifiers.make_pipeline(kind)).fit(e32.x[~test], y[~test])
        cross[test] = model.predict_proba(e8.x[test])[:, 1]
    out["int8_with_fp32_classifier"] = _summary(y, cross, threshold)
    return out


def _stage(model_dir: Path, manifest: Manifest, tmp: Path,
           written: tuple[str, ...] = ()) -> list[str]:
    """Copy every device file except the backbone (and the ``written`` roles, already in
    ``tmp``) into ``tmp``; rebuild end_to_end from it.

    Returns the copied device roles; a rebuilt ``end_to_end`` lies at ``tmp/.workbench/``.
    """
    files = manifest.files
    for role, entry in files.items():
        if role not in REPLACED_ROLES + REBUILT_ROLES + written:
            shutil.copy2(model_dir / entry.path, tmp / entry.path)
    if manifest.workbench_path(model_dir, "end_to_end") is not None and "classifier" in files:
        from training.onnx_classifier import merge_end_to_end, save_atomic

        merged = merge_end_to_end(tmp, onnx.load(str(manifest.path(tmp, "classifier"))),
                                  manifest)
        save_atomic(merged, tmp / END_TO_END)
    return [role for role in files if role not in REBUILT_ROLES + REPLACED_ROLES + written]


def quantize_model_dir(model_dir: Path, data_dir: Path, out_dir: Path, *, calib_files: int = 64,
                       check_files: int = 16, min_mean: float = MIN_MEAN_COSINE,
                       min_min: float = MIN_MIN_COSINE, seed: int = 0) -> dict[str, Any]:
    """Write an int8 copy of ``model_dir`` into ``out_dir``; return its manifest.

    Raises QuantizationRefused (nothing written) when the held-out cosine check fails.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise ValueError(f"{out_dir}: the int8 model needs its own folder (not --model)")
    manifest = load_manifest(model_dir)
    src = manifest.path(model_dir, "backbone")
    sr = manifest.sample_rate
    chunk_samples = manifest.streaming.chunk_samples
    calib, check = split_files(audio_files(data_dir), calib_files, check_files, seed)
    frontend = manifest.path(model_dir, "frontend")  # a separate float graph when listed
    exclude = front_end_nodes(onnx.load(str(src), load_external_data=False),
                              in_graph=frontend is None)
    log.info("front end kept float: %d nodes; calibrating on %d files, checking on %d",
             len(exclude), len(calib), len(check))
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out_dir))
    done = False
    try:
        backbone_input = onnx.load(str(src), load_external_data=False).graph.input[0].name
        spec = manifest.streaming
        gain = ((manifest.path(model_dir, "gain"), spec.gain_target_dbfs, spec.gain_max_db)
                if spec.gain_on else None)
        reader = ChunkReader(calib, sr, chunk_samples, backbone_input, frontend=frontend,
                             gain=gain)
        rewrites = quantize_backbone(src, tmp / manifest.files["backbone"].path, reader, exclude)
        pooling = manifest.files["pooling"].path
        pooled = quantize_pooling(manifest.path(model_dir, "pooling"), tmp / pooling)
        written = POOLED_ROLES if pooled else ()
        roles = _stage(model_dir, manifest, tmp, written)
        new = manifest.replace(
            files={**manifest_entries(tmp, "backbone", manifest.files["backbone"].path),
                   **(manifest_entries(tmp, "pooling", pooling) if pooled else {}),
                   **{role: file_entry(tmp, manifest.files[role].path) for role in roles}},
            workbench={})
        roles = list(new.files)
        if (tmp / END_TO_END).is_file():
            new = new.with_workbench_file(tmp, "end_to_end", END_TO_END)
        new.write(tmp)
        result = compare_embeddings(model_dir, tmp, check)
        log.info("int8 vs fp32 cosine on %d held-out windows: mean %.4f, min %.4f",
                 result.windows, result.mean_cosine, result.min_cosine)
        if not result.passed(min_mean, min_min):
            raise QuantizationRefused(
                f"{model_dir}: int8 embeddings too far from fp32 on {result.files} held-out "
                f"files (cosine mean {result.mean_cosine:.4f} < {min_mean} or min "
                f"{result.min_cosine:.4f} < {min_min}); nothing written")
        root = esc50_root(data_dir)
        if manifest.classifier is not None and root is not None:
            delta = classifier_delta(model_dir, tmp, root, manifest)
            log.info("fold-CV fp32 vs int8: %s", delta)
        else:
            delta = None
            log.info("no classifier section or no ESC-50 layout at %s: accuracy delta skipped",
                     data_dir)
        new = new.replace(quantization={
            "method": "backbone: onnxruntime quantize_static, QDQ, per-channel int8 weights "
                      "(symmetric), uint8 activations, MinMax calibration; average pools as "
                      "depthwise convs; pooling: dynamic int8 of its large matrix products",
            "quantized_roles": ["backbone", *(["pooling"] if pooled else [])],
            "rewrites": {**rewrites, "pooling_matmuls": pooled},
            "source_model": {f"{role}_sha256": manifest.files[role].sha256
                             for role in ("backbone", *(["pooling"] if pooled else []))},
            "calibration": {"files": len(calib), "chunks": int(len(reader.chunks)),
                            "chunk_samples": chunk_samples,
                            "data_dir": data_name(Path(data_dir).resolve()), "seed": seed},
            "excluded_nodes": exclude,
            "excluded_rule": ("log-mel front end: ancestors of Log + nodes before the next Conv"
                              if frontend is None else "front end: its own float graph "
                              "(frontend.onnx, copied); the backbone's nodes through its "
                              "first Conv"),
            "check": {"held_out_files": result.files, "windows": result.windows,
                      "mean_cosine": round(result.mean_cosine, 6),
                      "min_cosine": round(result.min_cosine, 6),
                      "min_mean_required": min_mean, "min_min_required": min_min},
            "classifier_cv": delta,
        })
        new.write(tmp)
        for role in roles:
            os.replace(tmp / new.files[role].path, out_dir / new.files[role].path)
        if (tmp / END_TO_END).is_file():
            (out_dir / END_TO_END).parent.mkdir(exist_ok=True)
            os.replace(tmp / END_TO_END, out_dir / END_TO_END)
        os.replace(tmp / "manifest.json", out_dir / "manifest.json")
        done = True
        return new
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not done and not any(out_dir.iterdir()):
            out_dir.rmdir()  # "nothing written": not even the folder
