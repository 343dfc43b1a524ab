"""ESC-50 layout reader (``audio/``, ``meta/esc50.csv``) and audio loading at 32 kHz mono.

ESC-50's own folds (1-5) are kept: they group clips cut from the same source recording, so
leave-one-fold-out never leaks a recording between train and test.

Audio is decoded by the device's own decoder (``edge_runtime.audio``): any soundfile-readable
file, any sample rate and channel count, averaged to mono and resampled to 32 kHz with **soxr**
(libsoxr "HQ", streaming). Training and serving thus see identical samples.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.ffmpeg_file import iter_audio
from edge_runtime.sources import AUDIO_SUFFIXES
from training.mapping import Mapping

log = logging.getLogger(__name__)

SAMPLE_RATE = 32_000


@dataclass(frozen=True)
class Clip:
    """One labelled clip: ``label`` 1 = danger, 0 = safe."""

    filename: str
    path: Path
    fold: int  # ESC-50 fold 1-5; 0 = not in any ESC-50 fold (extras, synthetic): always trained
    category: str
    label: int
    danger_class: str | None = None  # the mapping's class for a danger clip
    group: str = "esc50"  # where it came from: esc50, an --extra folder (with its fold), synthetic
    background: str | None = None  # a mix's background clip (its filename); None otherwise


def find_audio(audio_dir: Path, filename: str) -> Path | None:
    """The file for a meta row: as named, or the same stem with another audio suffix."""
    exact = audio_dir / filename
    if exact.is_file():
        return exact
    stem = Path(filename).stem
    for suffix in sorted(AUDIO_SUFFIXES):
        candidate = audio_dir / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


LABELS_CSV_COLUMNS = ("file", "label", "category")  # + optional fold: the openworld layout
LABELS_CSV_LAYOUT = "labels.csv with columns file,label,category[,fold]"
CSV_DELIMITERS = (",", ";", "\t")


def read_table(path: Path, required: tuple[str, ...], layout: str) -> list[dict[str, str]]:
    """Rows of a CSV with a header; one-line errors when it is absent or lacks a column
    (``layout`` says what was expected)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {layout}")
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte order mark; a spreadsheet in a
    # locale whose decimal mark is ',' separates with ';' (or a tab): the header says which
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = handle.readline()
            if not header.strip():
                raise ValueError(f"{path}: empty (no header line); expected {layout}")
            handle.seek(0)
            delimiter = max(CSV_DELIMITERS, key=header.count)
            reader = csv.DictReader(handle,
                                    delimiter=delimiter if header.count(delimiter) else ",")
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            missing = [c for c in required if c not in reader.fieldnames]
            if missing:
                raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                                 f"{layout}")
            return list(reader)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text (a spreadsheet saves it as \"CSV UTF-8\"); "
                         f"expected {layout}") from None


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels.csv, its values stripped (``label`` lower case; a missing value
    is ""), with its line number."""

    file: str
    label: str
    category: str
    fold: str
    line: int


def read_labels_csv(path: Path) -> list[LabelRow]:
    """The rows of a labels.csv (:data:`LABELS_CSV_LAYOUT`): rows without a file name are
    left out with a warning; a file listed twice with another label, category or fold is
    refused (which was meant?); listed twice the same, it is read once (a warning)."""
    rows = []
    for line, row in enumerate(read_table(path, LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT),
                               start=2):
        value = {key: (row.get(key) or "").strip() for key in (*LABELS_CSV_COLUMNS, "fold")}
        rows.append(LabelRow(value["file"], value["label"].lower(), value["category"],
                             value["fold"], line))
    unnamed = sum(not row.file for row in rows)
    if unnamed:
        log.warning("%s: %d row(s) without a file name left out", path, unnamed)
    first: dict[str, LabelRow] = {}
    for row in rows:
        if not row.file:
            continue
        seen = first.setdefault(row.file, row)
        if (seen.label, seen.category, seen.fold) != (row.label, row.category, row.fold):
            said = [f"{r.label or '(no label)'} {r.category or '(no category)'}"
                    + (f" fold {r.fold}" if r.fold else "") for r in (seen, row)]
            raise ValueError(f"{path}: {row.file} is listed twice (lines {seen.line} and "
                             f"{row.line}), as {said[0]} and as {said[1]}; keep one row")
    repeats = len(rows) - unnamed - len(first)
    if repeats:
        log.warning("%s: %d row(s) repeat a file listed above; each file is read once", path,
                    repeats)
    return list(first.values())


def read_meta(root: Path) -> list[dict[str, str]]:
    """Rows of ``root/meta/esc50.csv``; a clear error if the layout is not ESC-50's."""
    return read_table(root / "meta" / "esc50.csv", ("filename", "fold", "category"),
                      "an ESC-50 layout (audio/, meta/esc50.csv) — see 'edge-train fetch-esc50'")


def read_dataset(root: str | Path, mapping: Mapping, per_fold_limit: int | None = None
                 ) -> list[Clip]:
    """Mapped clips of an ESC-50 layout, in meta order.

    Rows whose audio file is absent are skipped with a one-line warning each. A mapped category
    with no clips is a warning; a class with no clips at all is an error.
    ``per_fold_limit`` keeps at most that many clips per (category, fold) — for quick runs.
    """
    root = Path(root)
    audio_dir = root / "audio"
    clips: list[Clip] = []
    kept: Counter[tuple[str, int]] = Counter()
    for row in read_meta(root):
        category = row["category"]
        label = mapping.label(category)
        if label is None:
            continue
        fold = int(row["fold"])
        if per_fold_limit is not None and kept[category, fold] >= per_fold_limit:
            continue
        path = find_audio(audio_dir, row["filename"])
        if path is None:
            log.warning("%s: audio file missing (no .wav/.flac/.ogg); skipped",
                        audio_dir / row["filename"])
            continue
        kept[category, fold] += 1
        clips.append(Clip(row["filename"], path, fold, category, label,
                          mapping.class_of(category) if label == 1 else None))
    per_category = Counter(clip.category for clip in clips)
    absent = [c for c in (*mapping.danger, *mapping.safe) if per_category[c] == 0]
    if absent:
        shown = ", ".join(absent[:8]) + (f" and {len(absent) - 8} more" if len(absent) > 8
                                         else "")
        # the default mapping names every relevant ESC-50 category; ESC-10 has 10 of them and
        # --extra folders add others, so this is news, not a problem (a class left without
        # clips or AudioSet evidence is warned about when the class plan is made)
        log.info("%s: no clips here for %d mapped categor%s (%s)", root, len(absent),
                 "y" if len(absent) == 1 else "ies", shown)
    for label, name in ((1, "danger"), (0, "safe")):
        if not any(clip.label == label for clip in clips):
            raise ValueError(f"{root}: class '{name}' has no clips (categories: "
                             f"{', '.join(mapping.danger if label else mapping.safe)})")
    return clips


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``, decoded exactly as the device decodes files.

    Raises :class:`edge_runtime.audio.AudioError` (one line naming the file) when unusable.
    """
    blocks = list(iter_audio(path, sample_rate))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def header_seconds(path: str | Path) -> float | None:
    """The file's length from its header alone (None: a format only ffmpeg reads, or
    unreadable): cheap where decoding would be wasted."""
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except (RuntimeError, OSError):
        return None
