"""Console logging for the workbench commands."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def setup(verbose: bool = False) -> None:
    """Human-readable console logs; warnings from noisy libraries kept quiet."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("torch", "onnxscript", "onnx_ir", "matplotlib", "numba", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# Without a terminal (a log file, systemd, CI) a progress bar is hidden: a line this often.
PROGRESS_EVERY_S = 30.0


def progress(items: Sequence[T], desc: str, unit: str) -> Iterator[T]:
    """``items`` one by one, with a progress bar on a terminal, else a log line every
    :data:`PROGRESS_EVERY_S` seconds ("embedding: 120/400 clips")."""
    if sys.stderr.isatty():
        yield from tqdm(items, desc=desc, unit=unit)
        return
    last = time.monotonic()
    for done, item in enumerate(items):
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            logging.getLogger(__name__).info("%s: %d/%d %ss", desc, done, len(items), unit)
        yield item
