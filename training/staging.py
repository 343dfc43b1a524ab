"""Build a model dir beside itself and put it in place only when the build succeeded.

A build that fails half way (a bad ``--extra`` folder, a crash, Ctrl-C) must not leave the
working model dir without its classifier: ``edge-detect`` would refuse it. The build runs in a
hidden sibling (``.NAME.building``, beside the real folder when ``out`` is a link) that starts
as a copy of the model dir — its workbench caches moved in, not copied (hundreds of MB of
embeddings, mixes and home audio) — and on success each entry replaces its namesake in the
model dir, ``manifest.json`` last, with Ctrl-C and SIGTERM held off for those few renames; a
daemon starting meanwhile sees either the old manifest (its files' checksums then refuse it in
one line) or the new model. On failure the caches go back and the model dir is as it was; the
caches of a build that was killed outright are taken back by the next one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from edge_runtime.manifest import MANIFEST_NAME
from training.reports import WORKBENCH

log = logging.getLogger(__name__)


def _put(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` (a file replaced in one rename; a folder replaced whole)."""
    if dst.is_dir() and not dst.is_symlink() and src.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _caches_back(stage: Path, out: Path) -> None:
    """Return the staging folder's caches to ``out`` (where the next build looks)."""
    if (stage / WORKBENCH).is_dir() and not (out / WORKBENCH).exists():
        out.mkdir(parents=True, exist_ok=True)
        os.replace(stage / WORKBENCH, out / WORKBENCH)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done (main thread only; elsewhere a no-op)."""
    held = {signal.SIGINT, signal.SIGTERM}
    main = threading.current_thread() is threading.main_thread()
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


@contextmanager
def staged(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield the folder to build in; on success its contents become ``out``'s."""
    out = Path(out).resolve()  # "." has no name; a link's target may be on another disk
    stage = out.parent / f".{out.name}.building"
    if stage.is_dir():
        _caches_back(stage, out)  # a build killed outright left them there
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
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
        with suppress(OSError):  # never hide the build's own error behind this one
            _caches_back(stage, out)
        shutil.rmtree(stage, ignore_errors=True)
        raise
    with _signals_held():
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
