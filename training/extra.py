"""Extra labelled folders for training (``edge-train build --extra DIR``).

A folder holds ``labels.csv`` with the columns ``file,label,category`` and optionally ``fold``
(the ``../shared/openworld`` layout), the audio in ``DIR/audio/FILE`` or ``DIR/FILE``. ``label``
is ``danger``, ``safe`` or ``ambiguous`` (left out). This is also how a user adds their own
recordings: "our smoke alarm" (danger, category smoke_alarm) or "the neighbour's dog is fine"
(safe). Extra clips are never in an ESC-50 fold: fold CV always trains on them.

Folds of an extra folder (UrbanSound8K's, recording-disjoint) can be held out of training with
``hold_out_folds`` so that a model can be evaluated on them (``edge-train evaluate --fold``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from training.dataset import LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT, Clip, read_table
from training.mapping import Mapping

log = logging.getLogger(__name__)

LABELS = {"danger": 1, "safe": 0}
AMBIGUOUS = "ambiguous"  # a label that is left out on purpose


def check_rows(table: Path, rows: list[dict[str, str]]) -> None:
    """Rows without a file name are left out; one recording listed twice with different
    labels or categories is refused (which one was meant?); listed twice the same, it is read
    once. ``rows`` is edited in place."""
    named = [row for row in rows if (row["file"] or "").strip()]
    if len(named) < len(rows):
        log.warning("%s: %d row(s) without a file name left out", table, len(rows) - len(named))
        rows[:] = named
    seen: dict[str, tuple[str, str]] = {}
    for row in rows:
        name = (row["file"] or "").strip()
        said = ((row["label"] or "").strip().lower(), (row["category"] or "").strip())
        if seen.setdefault(name, said) != said:
            first, then = (f"{label or '(no label)'} {category or '(no category)'}"
                           for label, category in (seen[name], said))
            raise ValueError(f"{table}: {name} is listed twice, as {first} and as {then}; "
                             "keep one row")
    twice = len(rows) - len(seen)
    if twice:
        log.warning("%s: %d row(s) repeat a file listed above; each file is read once",
                    table, twice)
        rows[:] = list({(row["file"] or "").strip(): row for row in rows}.values())
NO_FOLD = "none"  # hold_out_folds value for rows without a fold


def read_extra(root: str | Path, mapping: Mapping,
               hold_out_folds: tuple[str, ...] = ()) -> list[Clip]:
    """Clips of one extra folder. Danger clips get their class from the mapping's class
    categories; a danger category in no class is skipped with one warning."""
    root = Path(root)
    table = root / "labels.csv"
    rows = read_table(table, LABELS_CSV_COLUMNS, LABELS_CSV_LAYOUT)
    check_rows(table, rows)
    clips: list[Clip] = []
    unclassed: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for row in rows:
        written = (row["label"] or "").strip().lower()
        label = LABELS.get(written)
        fold = (row.get("fold") or "").strip() or NO_FOLD
        if label is None:
            (skipped if written == AMBIGUOUS else unknown)[written] += 1
            continue
        if fold in hold_out_folds:
            skipped[f"held-out fold {fold}"] += 1
            continue
        category = row["category"].strip()
        danger_class = mapping.class_of(category) if label == 1 else None
        if label == 1 and danger_class is None:
            unclassed[category] += 1
            continue
        path = next((p for p in (root / "audio" / row["file"], root / row["file"])
                     if p.is_file()), None)
        if path is None:
            log.warning("%s: audio file missing; skipped", root / row["file"])
            continue
        clips.append(Clip(f"{root.name}/{row['file']}", path, 0, category, label, danger_class,
                          f"{root.name}:fold{fold}"))
    for category, n in unclassed.items():
        log.warning("%s: %d danger clip(s) of category %r belong to no class of the mapping; "
                    "skipped (add the category to a class)", table, n, category)
    if unknown:  # a typo would silently leave out a recording the user meant to teach
        log.warning("%s: %d row(s) left out: label %s is not danger, safe or %s", table,
                    sum(unknown.values()), ", ".join(repr(k) for k in unknown), AMBIGUOUS)
    if skipped:
        log.info("%s: left out %s", table, ", ".join(f"{n} {k}" for k, n in skipped.items()))
    log.info("%s: %d clips (%d danger, %d safe)", table, len(clips),
             sum(c.label for c in clips), sum(1 - c.label for c in clips))
    return clips
