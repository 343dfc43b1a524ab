"""Console logging for the workbench commands."""

from __future__ import annotations

import logging


def setup(verbose: bool = False) -> None:
    """Human-readable console logs; warnings from noisy libraries kept quiet."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("torch", "onnxscript", "onnx_ir", "matplotlib", "numba", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
