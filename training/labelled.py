"""Labelled audio folders for evaluation and calibration.

Three layouts are read:

* **labels.csv** (the ``../shared/openworld`` layout): columns ``file,label,category[,fold]``
  (others ignored); ``label`` is ``danger``, ``safe`` or ``ambiguous``; the audio is
  ``DIR/audio/FILE`` or ``DIR/FILE`` (another audio suffix with the same stem is accepted);
  an empty ``fold`` means the clip belongs to no fold.
* **ESC-50** (``meta/esc50.csv`` + ``audio/``): the default danger/safe mapping of
  :mod:`training.mapping`; categories in neither list are left out.
* **a plain folder** (ambience recordings, :func:`read_safe_audio` only): every audio file
  under it, recursively, counted as safe, its category the folder it sits in.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.sources import is_candidate
from training.dataset import find_audio, read_labels_csv, read_meta
from training.extra import NO_FOLD
from training.mapping import default_mapping

log = logging.getLogger(__name__)

LABELS = ("danger", "safe", "ambiguous")


@dataclass(frozen=True)
class LabelledClip:
    """One audio file with its ground truth; ``data`` is the folder it was listed in."""

    path: Path
    label: str
    category: str
    fold: int | None
    data: Path

    @property
    def name(self) -> str:
        """The file's path relative to its folder (what reports show)."""
        try:
            return str(self.path.relative_to(self.data))
        except ValueError:
            return self.path.name


def layout(root: Path) -> str:
    """``labels.csv``, ``esc50`` or ``plain``."""
    if (root / "labels.csv").is_file():
        return "labels.csv"
    if (root / "meta" / "esc50.csv").is_file():
        return "esc50"
    return "plain"


def _fold(text: str | None, where: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"{where}: fold {text!r} is not a number") from None


def _labels_csv(root: Path) -> list[LabelledClip]:
    path = root / "labels.csv"
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    clips = []
    for row in read_labels_csv(path):
        where = f"{path}:{row.line}"
        if row.label not in LABELS:
            raise ValueError(f"{where}: label {row.label!r} is not one of "
                             f"{', '.join(LABELS)}")
        found = find_audio(audio_dir, row.file) or find_audio(root, row.file)
        if found is None:
            log.warning("%s: audio file %s missing; skipped", where, row.file)
            continue
        clips.append(LabelledClip(found, row.label, row.category or "unknown",
                                  _fold(row.fold, where), root))
    return clips


def _esc50(root: Path) -> list[LabelledClip]:
    mapping = default_mapping()
    clips = []
    for row in read_meta(root):
        label = mapping.label(row["category"])
        if label is None:
            continue
        found = find_audio(root / "audio", row["filename"])
        if found is None:
            log.warning("%s: audio file missing; skipped", root / "audio" / row["filename"])
            continue
        clips.append(LabelledClip(found, "danger" if label else "safe", row["category"],
                                  _fold(row["fold"], str(root / "meta" / "esc50.csv")), root))
    return clips


def parse_fold(fold: int | str | None) -> int | str | None:
    """A fold selection: None (every fold), a fold number, or ``none`` (rows without a fold)."""
    if fold is None or isinstance(fold, int):
        return fold
    text = fold.strip().lower()
    if text == NO_FOLD:
        return NO_FOLD
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"fold {fold!r} is neither a number nor '{NO_FOLD}'") from None


def read_labelled(root: str | Path, fold: int | str | None = None) -> list[LabelledClip]:
    """Clips of a ``labels.csv`` or ESC-50 folder; ``fold``: only that fold's clips
    (``none``: only those without a fold)."""
    fold = parse_fold(fold)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    kind = layout(root)
    if kind == "plain":
        raise ValueError(f"{root}: neither labels.csv (file,label,category[,fold]) nor an "
                         "ESC-50 layout (meta/esc50.csv)")
    clips = _labels_csv(root) if kind == "labels.csv" else _esc50(root)
    if fold is not None:
        clips = [c for c in clips if c.fold == (None if fold == NO_FOLD else fold)]
    if not clips:
        raise ValueError(f"{root}: no clips" + ("" if fold is None else " without a fold"
                                                if fold == NO_FOLD else f" in fold {fold}"))
    return clips


def read_safe_audio(root: str | Path, fold: int | str | None = None) -> list[LabelledClip]:
    """Safe recordings of a folder: its safe rows when it is labelled, else every audio file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if layout(root) != "plain":
        clips = [c for c in read_labelled(root, fold) if c.label == "safe"]
    else:
        clips = [LabelledClip(p, "safe", p.parent.name if p.parent != root else "ambience",
                              None, root)
                 for p in sorted(root.rglob("*")) if p.is_file() and is_candidate(p)]
    if not clips:
        raise ValueError(f"{root}: no safe audio files")
    return clips


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A ``labels.csv``-style table (header, then rows) as text, for an atomic write."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return table.getvalue()
