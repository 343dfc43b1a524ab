"""Named danger classes: which evidence each class uses, the multi-class model, its ONNX.

Evidence per class (recorded in the manifest's ``classes.evidence``):

* **trained** — the class has at least ``mapping.min_clips`` real training clips: it is one
  output of a multi-class classifier (safe + trained classes) fed the window embedding and,
  when the backbone's AudioSet head is real (official pretrained weights), the head's 527
  log-odds too (what the pretrained model already knows about each window).
* **audioset** — fewer clips: zero-shot, the largest head probability over the class's AudioSet
  labels. Only with a real head; random-init checkpoints (Cnn14 here) have none, so their
  models use trained evidence alone and classes without clips are left out (with a warning).

A trained class with AudioSet labels also has a **head gate** when the head is real: its score
counts only in windows where the head gives the class's labels (and the labels it is often
``heard_as``: gunshots as fireworks or a whip) at least what nearly every training clip of the
class had (:data:`GATE_PERCENTILE`); elsewhere it is 0. The classifier
extrapolates to sounds unlike its training (held-out accordion music scored 0.96 as dog_bark
while the head heard no dog at all: max over the dog labels 0.001); the head, trained on
AudioSet's 2 million clips, vetoes that.

``classifier.onnx`` then maps ``embedding [batch, E]`` (and, where the plan uses the head,
``audioset_probs [batch, 527]``: head.onnx's output, fed by the runtime) to
``class_scores [batch, K]`` (one raw
score per class, manifest order); the runtime normalises each by its class threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper

from edge_runtime.classes import HEAD_PROBS_INPUT
from training.mapping import Mapping, audioset_labels
from training.onnx_classifier import (
    OPSET,
    aligned,
    check_opsets,
    normalise_opsets,
    sklearn_to_onnx,
)

log = logging.getLogger(__name__)

CLASS_OUTPUT = "class_scores"
# Default thresholds before calibration (raw score scale). Trained: the classifier's own
# probability; zero-shot: the head's probability, where 0.3 flagged under 2 % of held-out safe
# UrbanSound8K clips with mn04 (edge-train calibrate replaces both from a false-alarm budget).
TRAINED_THRESHOLD = 0.5
ZERO_SHOT_THRESHOLD = 0.3
# ... and for a zero-shot class with persistence (min_seconds): short clips cannot raise it, so
# what 0.3 guarded against does not apply; what it must stay under is what long safe audio holds
# for min_seconds. With mn04 the smoke/fire alarm labels held at most 0.12 over 40 min of
# synthetic home audio (4 scored windows, 6 s) and under 0.01 in the real ambiences, while the
# quietest real smoke alarm here (bsb1153, recorded from afar) holds 0.27: 0.2 sits between.
ZERO_SHOT_PERSISTED_THRESHOLD = 0.2
LOGIT_EPS = 1e-5
# Head gate of a trained class: this percentile of its real training clips' head evidence (the
# largest probability over the class's AudioSet labels in the clip's loudest-evidence window).
GATE_PERCENTILE = 2.0


@dataclass
class ClassPlan:
    """The classes a model reports and where each one's score comes from."""

    names: list[str]
    trained: list[str]  # classifier columns 1.. (column 0 is safe)
    zero_shot: dict[str, list[int]] = field(default_factory=dict)  # class → head indices
    use_head: bool = False
    clips: dict[str, int] = field(default_factory=dict)  # real training clips per class
    # class → head indices its gate reads: its audioset labels and what it is heard_as
    gate_labels: dict[str, list[int]] = field(default_factory=dict)
    gates: dict[str, float] = field(default_factory=dict)  # trained class → head gate
    min_seconds: dict[str, float] = field(default_factory=dict)  # class → its persistence

    @property
    def evidence(self) -> list[str]:
        uses_head = bool(self.zero_shot or self.gates)
        return (["trained"] if self.trained else []) + (["audioset"] if uses_head else [])

    def persistence(self, name: str) -> float:
        """The class's ``min_seconds`` (0: an event may start from one window)."""
        return self.min_seconds.get(name, 0.0)

    def default_thresholds(self) -> list[float]:
        """Each class's threshold before any safe audio vouches for another: per evidence."""
        return [TRAINED_THRESHOLD if n in self.trained
                else ZERO_SHOT_PERSISTED_THRESHOLD if self.persistence(n) > 0
                else ZERO_SHOT_THRESHOLD for n in self.names]

    def target(self, danger_class: np.ndarray, label: np.ndarray) -> np.ndarray:
        """Multi-class targets: 0 safe, 1 + index in ``trained``; −1 for rows left out (danger
        clips of zero-shot classes)."""
        index = {name: i + 1 for i, name in enumerate(self.trained)}
        return np.array([0 if y == 0 else index.get(c, -1)
                         for c, y in zip(danger_class, label, strict=True)], dtype=np.int64)


def plan_classes(mapping: Mapping, clip_counts: dict[str, int], head_is_real: bool) -> ClassPlan:
    """Decide each class's evidence from its real clip count and whether the head is real."""
    labels = {name: i for i, name in enumerate(audioset_labels())}
    names, trained, zero_shot = [], [], {}
    gate_labels = {cls.name: [labels[a] for a in cls.audioset + cls.heard_as]
                   for cls in mapping.classes if cls.audioset}
    for cls in mapping.classes:
        n = clip_counts.get(cls.name, 0)
        if n >= mapping.min_clips:
            trained.append(cls.name)
        elif head_is_real and cls.audioset:
            zero_shot[cls.name] = [labels[a] for a in cls.audioset]
        else:
            why = "no real AudioSet head" if cls.audioset else "no AudioSet labels"
            log.warning("class %s: %d training clip(s) (< %d) and %s; left out of this model",
                        cls.name, n, mapping.min_clips, why)
            continue
        names.append(cls.name)
    if not trained:
        raise ValueError("no class has enough training clips for a classifier (min_clips "
                         f"{mapping.min_clips}); counts: {clip_counts}")
    plan = ClassPlan(names, trained, zero_shot, head_is_real, dict(clip_counts),
                     gate_labels if head_is_real else {},
                     min_seconds={c.name: c.min_seconds for c in mapping.classes
                                  if c.name in names and c.min_seconds > 0})
    log.info("classes: trained %s; zero-shot (AudioSet) %s", ", ".join(trained) or "-",
             ", ".join(zero_shot) or "-")
    return plan


def per_file_max(files: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Each file's largest value over its rows (windows)."""
    peaks: dict[str, float] = {}
    for f, v in zip(files, values, strict=True):
        peaks[f] = max(peaks.get(f, 0.0), float(v))
    return peaks


def head_gates(plan: ClassPlan, head: np.ndarray, danger_class: np.ndarray,
               files: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Per trained class with AudioSet labels: the ``GATE_PERCENTILE`` of its real training
    clips' head evidence (each clip's largest over its windows)."""
    gates = {}
    for name in plan.trained:
        if name not in plan.gate_labels:
            continue
        rows = real & (danger_class == name)
        per_clip = per_file_max(files[rows], head[rows][:, plan.gate_labels[name]].max(axis=1))
        if per_clip:
            gates[name] = float(np.percentile(list(per_clip.values()), GATE_PERCENTILE))
    return gates


def head_logits(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), LOGIT_EPS, 1 - LOGIT_EPS)
    return np.log(p / (1 - p)).astype(np.float32)


def features(x: np.ndarray, head_probs: np.ndarray | None) -> np.ndarray:
    """Classifier input: the embedding, plus the head's log-odds when the plan uses the head."""
    return x if head_probs is None else np.hstack([x, head_logits(head_probs)])


def class_scores(proba: np.ndarray, head_probs: np.ndarray | None, plan: ClassPlan,
                 classes_: np.ndarray) -> np.ndarray:
    """``[n, K]`` raw class scores from classifier probabilities and head probabilities (the
    numpy twin of the ONNX graph, for CV and checks)."""
    column = {int(c): i for i, c in enumerate(classes_)}
    cols = []
    for name in plan.names:
        if name in plan.trained:
            col = column.get(plan.trained.index(name) + 1)  # absent: no rows in this fit
            score = np.zeros(len(proba)) if col is None else proba[:, col]
            if name in plan.gates and head_probs is not None:
                evidence = head_probs[:, plan.gate_labels[name]].max(axis=1)
                score = np.where(evidence >= np.float32(plan.gates[name]), score, 0.0)
            cols.append(score)
        else:
            cols.append(head_probs[:, plan.zero_shot[name]].max(axis=1))
    return np.stack(cols, axis=1).astype(np.float32)


# --- ONNX ------------------------------------------------------------------------------------

def _feature_graph(n_labels: int | None, dim: int) -> onnx.ModelProto:
    """embedding (+ audioset_probs, the head's output) → features (embedding ⊕ head log-odds)
    and head_probs (the head's probabilities, passed on to the class scores)."""
    emb = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])
    if n_labels is None:
        graph = helper.make_graph(
            [helper.make_node("Identity", ["embedding"], ["features"])], "features", [emb],
            [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                 ir_version=10)
    graph = helper.make_graph(
        [helper.make_node("Clip", [HEAD_PROBS_INPUT, "f/lo", "f/hi"], ["f/p"]),
         helper.make_node("Sub", ["f/one", "f/p"], ["f/q"]),
         helper.make_node("Div", ["f/p", "f/q"], ["f/odds"]),
         helper.make_node("Log", ["f/odds"], ["f/logits"]),
         helper.make_node("Concat", ["embedding", "f/logits"], ["features"], axis=1),
         helper.make_node("Identity", [HEAD_PROBS_INPUT], ["head_probs"])],
        "features",
        [emb, helper.make_tensor_value_info(HEAD_PROBS_INPUT, TensorProto.FLOAT,
                                            ["batch", n_labels])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", dim + n_labels]),
         helper.make_tensor_value_info("head_probs", TensorProto.FLOAT, ["batch", n_labels])],
        initializer=[helper.make_tensor("f/lo", TensorProto.FLOAT, [], [LOGIT_EPS]),
                     helper.make_tensor("f/hi", TensorProto.FLOAT, [], [1 - LOGIT_EPS]),
                     helper.make_tensor("f/one", TensorProto.FLOAT, [], [1.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=10)


def _scores_graph(plan: ClassPlan, n_columns: int, n_labels: int) -> onnx.ModelProto:
    """probabilities [batch, C] (+ head_probs) → class_scores [batch, K]."""
    nodes, inits, parts = [], [], []
    for k, name in enumerate(plan.names):
        if name in plan.trained:
            idx = helper.make_tensor(f"s/i{k}", TensorProto.INT64, [1],
                                     [plan.trained.index(name) + 1])
            gated = name in plan.gates
            nodes.append(helper.make_node("Gather", ["probabilities", idx.name],
                                          [f"s/t{k}" if gated else f"s/c{k}"], axis=1))
            if gated:
                labels = helper.make_tensor(f"s/l{k}", TensorProto.INT64,
                                            [len(plan.gate_labels[name])], plan.gate_labels[name])
                gate = helper.make_tensor(f"s/gate{k}", TensorProto.FLOAT, [],
                                          [plan.gates[name]])
                inits += [labels, gate]
                nodes += [
                    helper.make_node("Gather", ["head_probs", labels.name], [f"s/e{k}"],
                                     axis=1),
                    helper.make_node("ReduceMax", [f"s/e{k}", "s/axis1"], [f"s/m{k}"],
                                     keepdims=1),
                    helper.make_node("Less", [f"s/m{k}", gate.name], [f"s/below{k}"]),
                    helper.make_node("Where", [f"s/below{k}", "s/zero", f"s/t{k}"],
                                     [f"s/c{k}"])]
        else:
            idx = helper.make_tensor(f"s/i{k}", TensorProto.INT64,
                                     [len(plan.zero_shot[name])], plan.zero_shot[name])
            nodes.append(helper.make_node("Gather", ["head_probs", idx.name], [f"s/g{k}"],
                                          axis=1))
            nodes.append(helper.make_node("ReduceMax", [f"s/g{k}", "s/axis1"], [f"s/c{k}"],
                                          keepdims=1))
        inits.append(idx)
        parts.append(f"s/c{k}")
    nodes.append(helper.make_node("Concat", parts, [CLASS_OUTPUT], axis=1))
    needs_head = bool(plan.zero_shot or plan.gates)
    if needs_head:
        inits.append(helper.make_tensor("s/axis1", TensorProto.INT64, [1], [1]))
    if plan.gates:
        inits.append(helper.make_tensor("s/zero", TensorProto.FLOAT, [], [0.0]))
    inputs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT,
                                            ["batch", n_columns])]
    if needs_head:
        inputs.append(helper.make_tensor_value_info("head_probs", TensorProto.FLOAT,
                                                    ["batch", n_labels]))
    graph = helper.make_graph(nodes, "class_scores", inputs, [helper.make_tensor_value_info(
        CLASS_OUTPUT, TensorProto.FLOAT, ["batch", len(plan.names)])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=10)


def class_model_onnx(pipeline: Any, plan: ClassPlan, dim: int,
                     n_labels: int | None = None) -> onnx.ModelProto:
    """One graph: embedding [batch, E] (+ the head's audioset_probs [batch, n_labels] where
    the plan uses the head) → class_scores [batch, K]. The head itself stays in head.onnx: the
    runtime runs it once and feeds its output here, so its weights are loaded once."""
    n_labels = n_labels if plan.use_head else None
    feat = _feature_graph(n_labels, dim)
    skl = sklearn_to_onnx(pipeline, dim + (n_labels or 0), input_name="features",
                          output_name="probabilities")
    n_cols = len(pipeline.steps[-1][1].classes_)
    scores = _scores_graph(plan, n_cols, n_labels or len(audioset_labels()))
    feat, skl, scores = (normalise_opsets(m) for m in (feat, skl, scores))
    parts = {"features": feat, "classifier": skl, "scores": scores}
    opsets = check_opsets(parts)
    ir = max(m.ir_version for m in parts.values())
    feat, skl, scores = (aligned(m, ir, opsets, f"{k}/") for k, m in parts.items())
    keep = ["probabilities"] + (["head_probs"] if n_labels is not None else [])
    merged = compose.merge_models(feat, skl, io_map=[("features", "features")], outputs=keep)
    io = [("probabilities", "probabilities")]
    if plan.zero_shot or plan.gates:
        io.append(("head_probs", "head_probs"))
    merged = compose.merge_models(merged, scores, io_map=io, outputs=[CLASS_OUTPUT])
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(opsets.items()))
    merged.graph.name = "edge_detect_classes"
    inputs = f"embedding [batch, {dim}]" + (
        f" + {HEAD_PROBS_INPUT} [batch, {n_labels}] (head.onnx)" if n_labels is not None else "")
    merged.doc_string = (f"{inputs} -> class_scores [batch, {len(plan.names)}]: "
                         f"{', '.join(plan.names)}")
    onnx.checker.check_model(merged, full_check=True)
    return merged
