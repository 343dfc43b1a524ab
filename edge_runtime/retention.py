"""Clip retention: ``--clips-keep-days`` removes clips older than that; ``--clips-max-mb``
then removes the oldest clips until the folder's clips fit; ``--clips-keep-best N`` spares the
N clips of each class with the highest peak from both (class and peak are in the clip's name,
:func:`edge_runtime.sinks.clip_name`). Runs at start and after each clip. Only finished clips
(``*.flac``, not hidden) are touched."""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_runtime.text import printable

log = logging.getLogger("edge-detect")

CLIP_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_(?P<label>[a-z0-9_]+)_p(?P<peak>[01]\.\d{3})_")


def best_per_class(paths: list[Path], keep_best: int) -> set[Path]:
    """The ``keep_best`` clips of each class with the highest peak (names not matching
    :data:`CLIP_NAME` belong to no class and are never spared)."""
    by_label: dict[str, list[tuple[float, Path]]] = defaultdict(list)
    for path in paths:
        if match := CLIP_NAME.match(path.name):
            by_label[match["label"]].append((float(match["peak"]), path))
    return {p for clips in by_label.values()
            for _, p in sorted(clips, key=lambda c: -c[0])[:keep_best]}


def prune(directory: str | os.PathLike[str], max_mb: float | None = None,
          keep_days: float | None = None, now: float | None = None,
          keep_best: int = 0) -> list[Path]:
    """Apply the limits to ``directory``; returns the clips removed (oldest first)."""
    directory = Path(directory)
    now = time.time() if now is None else now
    clips = []
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        log.error("%s: cannot list the clip folder (%s)", printable(directory),
                  exc.strerror or exc)
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".flac"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        clips.append((st.st_mtime, st.st_size, Path(entry.path)))
    clips.sort()
    spared = best_per_class([c[2] for c in clips], keep_best) if keep_best > 0 else set()
    doomed = []
    if keep_days:
        doomed = [c for c in clips if now - c[0] > keep_days * 86400 and c[2] not in spared]
    left = [c for c in clips if c not in doomed]
    if max_mb is not None and max_mb >= 0:
        total, limit = sum(c[1] for c in left), int(max_mb * 1024 * 1024)
        for clip in [c for c in left if c[2] not in spared]:  # oldest first
            if total <= limit:
                break
            doomed.append(clip)
            total -= clip[1]
    removed = []
    for _mtime, _size, path in doomed:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.error("%s: cannot remove old clip (%s)", printable(path), exc.strerror or exc)
    if removed:
        log.info("clip retention: removed %d old clip(s) from %s", len(removed),
                 printable(directory))
    return removed


class RetentionSink:
    """A sink placed after the clip sink: prunes the clip folder after every event."""

    def __init__(self, directory: str | os.PathLike[str], max_mb: float | None,
                 keep_days: float | None, keep_best: int = 0) -> None:
        self.directory, self.max_mb, self.keep_days = Path(directory), max_mb, keep_days
        self.keep_best = keep_best
        prune(self.directory, max_mb, keep_days, keep_best=keep_best)

    def on_start(self, _record: Any) -> None:
        pass

    def on_update(self, _record: Any) -> None:
        pass

    def on_end(self, _record: Any) -> None:
        prune(self.directory, self.max_mb, self.keep_days, keep_best=self.keep_best)

    def close(self) -> None:
        pass
