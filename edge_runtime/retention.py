"""Clip retention: ``--clips-keep-days`` removes clips older than that; ``--clips-max-mb``
then removes the oldest clips until the folder's clips fit. Runs at start and after each clip.
Only finished clips (``*.flac``, not hidden) are touched."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from edge_runtime.text import printable

log = logging.getLogger("edge-detect")


def prune(directory: str | os.PathLike[str], max_mb: float | None = None,
          keep_days: float | None = None, now: float | None = None) -> list[Path]:
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
    doomed = []
    if keep_days:
        doomed = [c for c in clips if now - c[0] > keep_days * 86400]
    left = [c for c in clips if c not in doomed]
    if max_mb is not None and max_mb >= 0:
        total, limit = sum(c[1] for c in left), int(max_mb * 1024 * 1024)
        while left and total > limit:
            oldest = left.pop(0)
            doomed.append(oldest)
            total -= oldest[1]
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
                 keep_days: float | None) -> None:
        self.directory, self.max_mb, self.keep_days = Path(directory), max_mb, keep_days
        prune(self.directory, max_mb, keep_days)

    def on_start(self, _record: Any) -> None:
        pass

    def on_update(self, _record: Any) -> None:
        pass

    def on_end(self, _record: Any) -> None:
        prune(self.directory, self.max_mb, self.keep_days)

    def close(self) -> None:
        pass
