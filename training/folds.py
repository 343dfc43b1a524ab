"""Per-fold models shared by ``stream-eval`` and ``robustness``: a classifier fitted without one
ESC-50 fold (threshold from an inner fold CV on the rest) and its own model dir."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.manifest import ClassifierSpec, Manifest
from edge_runtime.options import THRESHOLD_FALLBACK
from training import classifiers, evaluate
from training.attach import attach_classifier
from training.embed import Embeddings
from training.mapping import Mapping
from training.onnx_classifier import CLASSIFIER_OUTPUT, DANGER_COLUMN, to_onnx

BASE_ROLES = ("frontend", "backbone", "pooling", "head", "labels", "frontend_data",
              "backbone_data", "pooling_data", "head_data")


def fit_held_out(emb: Embeddings, kind: str, held_out: int, seed: int = 0,
                 target_recall: float = evaluate.DEFAULT_TARGET_RECALL):
    """Pipeline fitted without fold ``held_out``; threshold from an inner fold CV on the rest.

    Returns ``(pipeline, threshold, train_mask)``.
    """
    train = emb.fold != held_out
    if not train.any() or train.all():
        raise ValueError(f"fold {held_out}: need clips both in it and outside it")
    inner_folds = np.unique(emb.fold[train])
    pipeline = classifiers.make_pipeline(kind, seed)
    if len(inner_folds) >= 2:
        inner = evaluate.evaluate(pipeline, emb.x[train], emb.label[train], emb.fold[train],
                                  target_recall)
        threshold = float(inner["threshold"])
    else:
        threshold = THRESHOLD_FALLBACK
    fitted = classifiers.make_pipeline(kind, seed).fit(emb.x[train], emb.label[train])
    return fitted, threshold, train


def fold_model_dir(base: Path, dest: Path, pipeline, dim: int, threshold: float,
                   section: ClassifierSpec) -> Path:
    """A model dir at ``dest``: ``base``'s backbone/pooling/head/labels (hard-linked) plus this
    ``pipeline`` as ``classifier.onnx`` with ``section`` at ``threshold``."""
    attach_classifier(base, dest, to_onnx(pipeline, dim),
                      section.replace(threshold=float(threshold)), roles=BASE_ROLES)
    return dest


def classifier_section(manifest: Manifest, kind: str, mapping: Mapping, held_out: int,
                       target_recall: float) -> ClassifierSpec:
    """The manifest ``classifier`` section of a fold model (threshold filled in later)."""
    return ClassifierSpec(
        kind=kind, input="embedding", output=CLASSIFIER_OUTPUT, danger_column=DANGER_COLUMN,
        threshold_target={"danger_recall": target_recall}, classes=("safe", "danger"),
        mapping=mapping.as_dict(),
        trained_on={"held_out_fold": int(held_out), "note": "held-out fold model",
                    "base_model": manifest.backbone.name})
