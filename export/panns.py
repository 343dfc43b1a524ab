"""Import ``panns_inference`` safely offline.

``panns_inference.config`` runs ``wget`` at import time when
``~/panns_data/class_labels_indices.csv`` is missing; offline that wget fails (or hangs on DNS)
and the import then dies opening the missing file. We put the AudioSet label list that ships
with ``edge_runtime`` there first, so the import never touches the network.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from types import ModuleType

from edge_runtime import atomic

LABELS_RESOURCE = "audioset_class_labels_indices.csv"


def labels_csv() -> Path:
    """Path of the packaged 527-label AudioSet CSV (index, mid, display_name)."""
    return Path(str(resources.files("edge_runtime") / "data" / LABELS_RESOURCE))


def audioset_labels() -> list[str]:
    """The 527 AudioSet display names in model output order."""
    import csv

    with labels_csv().open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return [row[2] for row in rows[1:]]


def ensure_panns_labels(home: Path | None = None) -> Path:
    """Make sure panns_inference finds its labels CSV without downloading it."""
    target = (home or Path.home()) / "panns_data" / "class_labels_indices.csv"
    if not target.is_file() or target.stat().st_size == 0:
        atomic.write_with(target, lambda tmp: shutil.copyfile(labels_csv(), tmp))
    return target


def panns_models() -> ModuleType:
    """``panns_inference.models``, imported without any network access."""
    ensure_panns_labels()
    from panns_inference import models

    return models
