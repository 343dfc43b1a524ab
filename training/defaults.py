"""Workbench defaults, each declared once and light to import (no sklearn, no torch): the
``edge-train`` options and the training functions both read them from here."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_runtime.manifest import Manifest

KINDS = ("logreg", "rf", "mlp")  # classifier kinds; see training.classifiers.make_pipeline
DEFAULT_KIND = "logreg"
DEFAULT_TARGET_RECALL = 0.95  # operating threshold: fewest false alarms at this danger recall
BACKBONE_CHOICES = ("auto", "cnn14", "mn04")


def kind_of(manifest: Manifest, given: str | None = None) -> str:
    """``given``, else the kind the model dir was built with, else :data:`DEFAULT_KIND`;
    ValueError for a kind this workbench cannot fit."""
    kind = given or (manifest.classifier.kind if manifest.classifier else "") or DEFAULT_KIND
    if kind not in KINDS:
        raise ValueError(f"unknown classifier {kind!r}; choose {', '.join(KINDS)}")
    return kind
