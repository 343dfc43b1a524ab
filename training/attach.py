"""Attach a classifier to a model dir — the one way the workbench does it.

``build`` attaches its final classifier in place (with ``end_to_end.onnx``); fold models of
``stream-eval`` and ``robustness`` and the benchmarks' throw-away model attach one to a new
folder that shares the base model's files by hard link (a model dir's files must lie inside it).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import onnx

from edge_runtime import atomic
from edge_runtime.manifest import ClassifierSpec, ClassSpec, Manifest, load_manifest
from training.bundle import END_TO_END
from training.onnx_classifier import merge_end_to_end, save_atomic

CLASSIFIER_FILE = "classifier.onnx"
CLASSIFIER_ROLES = ("classifier", "end_to_end")
LEGACY_END_TO_END = "end_to_end.onnx"  # where builds before the workbench section put it


def attach_classifier(base: str | Path, dest: str | Path, classifier: onnx.ModelProto,
                      spec: ClassifierSpec, *, end_to_end: bool = False,
                      classes: ClassSpec | None = None,
                      roles: Iterable[str] | None = None) -> Manifest:
    """Write ``classifier`` as ``dest/classifier.onnx`` and ``dest``'s manifest (``spec`` as its
    ``classifier`` section, ``classes`` as its named classes — None: binary only).

    ``dest`` may be ``base`` itself; otherwise ``base``'s files (``roles``, default: all but a
    previous classifier) are hard-linked into it. ``end_to_end``: also merge
    ``.workbench/end_to_end.onnx`` and list it in the manifest's ``workbench`` section (never
    deployed); without it a stale end_to_end entry is dropped. Returns the manifest.
    """
    base, dest = Path(base), Path(dest)
    manifest = load_manifest(base)
    keep = list(roles) if roles is not None else \
        [r for r in manifest.files if r not in CLASSIFIER_ROLES]
    files = {role: manifest.files[role] for role in keep if role in manifest.files}
    if dest.resolve() != base.resolve():
        dest.mkdir(parents=True, exist_ok=True)
        for entry in files.values():
            atomic.link_or_copy(base / entry.path, dest / entry.path)
    save_atomic(classifier, dest / CLASSIFIER_FILE)
    workbench = manifest.workbench if dest.resolve() == base.resolve() else {}
    manifest = manifest.replace(files=files, classifier=spec, classes=classes,
                                workbench=workbench).without_workbench_file("end_to_end")
    manifest = manifest.with_file(dest, "classifier", CLASSIFIER_FILE)
    if end_to_end:
        save_atomic(merge_end_to_end(dest, classifier, manifest), dest / END_TO_END)
        manifest = manifest.with_workbench_file(dest, "end_to_end", END_TO_END)
    (dest / LEGACY_END_TO_END).unlink(missing_ok=True)
    manifest.write(dest)
    return manifest
