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

from training.dataset import Clip, read_labels_csv
from training.mapping import Mapping

log = logging.getLogger(__name__)

LABELS = {"danger": 1, "safe": 0}
AMBIGUOUS = "ambiguous"  # a label that is left out on purpose
NO_FOLD = "none"  # hold_out_folds value for rows without a fold


def read_extra(root: str | Path, mapping: Mapping,
               hold_out_folds: tuple[str, ...] = ()) -> list[Clip]:
    """Clips of one extra folder. Danger clips get their class from the mapping's class
    categories; a danger category in no class is skipped with one warning."""
    root = Path(root)
    table = root / "labels.csv"
    clips: list[Clip] = []
    unclassed: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    unknown: Counter[str] = Counter()
    for row in read_labels_csv(table):
        label = LABELS.get(row.label)
        fold = row.fold or NO_FOLD
        if label is None:
            (skipped if row.label == AMBIGUOUS else unknown)[row.label] += 1
            continue
        if fold in hold_out_folds:
            skipped[f"held-out fold {fold}"] += 1
            continue
        category = row.category
        danger_class = mapping.class_of(category) if label == 1 else None
        if label == 1 and danger_class is None:
            unclassed[category] += 1
            continue
        path = next((p for p in (root / "audio" / row.file, root / row.file) if p.is_file()),
                    None)
        if path is None:
            log.warning("%s: audio file missing; skipped", root / row.file)
            continue
        clips.append(Clip(f"{root.name}/{row.file}", path, 0, category, label, danger_class,
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
