"""Build a model dir beside itself and put it in place only when the build succeeded.

A build that fails half way (a bad ``--extra`` folder, a crash, Ctrl-C) must not leave the
working model dir without its classifier: ``edge-detect`` would refuse it. The build runs in a
hidden sibling (``.NAME.building``) that starts as a copy of the model dir — its workbench
caches moved in, not copied (hundreds of MB of embeddings, mixes and home audio) — and on
success each entry replaces its namesake in the model dir, ``manifest.json`` last, so a daemon
starting meanwhile sees either the old manifest (its files' checksums then refuse it in one
line) or the new model. On failure the caches go back and the model dir is as it was.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_runtime.manifest import MANIFEST_NAME
from training.reports import WORKBENCH

log = logging.getLogger(__name__)


def _put(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` (a file replaced in one rename; a folder replaced whole)."""
    if dst.is_dir() and not dst.is_symlink() and src.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


@contextmanager
def staged(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the folder to build in; on success its contents become ``out``'s."""
    out = Path(out)
    stage = out.parent / f".{out.name}.building"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    cache = out / WORKBENCH
    try:
        if out.is_dir():
            for entry in out.iterdir():
                if entry.name == WORKBENCH:
                    os.replace(entry, stage / WORKBENCH)
                elif entry.is_dir() and not entry.is_symlink():
                    shutil.copytree(entry, stage / entry.name, symlinks=True)
                else:
                    shutil.copy2(entry, stage / entry.name, follow_symlinks=False)
        yield stage
    except BaseException:
        if (stage / WORKBENCH).is_dir() and not cache.exists():
            os.replace(stage / WORKBENCH, cache)  # the caches stay where the next build looks
        shutil.rmtree(stage, ignore_errors=True)
        raise
    out.mkdir(parents=True, exist_ok=True)
    built = {entry.name for entry in stage.iterdir()}
    for name in sorted(built - {MANIFEST_NAME}) + [MANIFEST_NAME] * (MANIFEST_NAME in built):
        _put(stage / name, out / name)
    for entry in out.iterdir():  # files the new build no longer has (an older export's)
        if entry.name not in built:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    stage.rmdir()
    log.info("model dir %s replaced by the new build", out)
