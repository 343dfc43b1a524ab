"""The one place tests locate ``../shared`` (data beside the project; absent on a fresh clone)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``$EDGE_DETECT_SHARED`` or ``../shared`` beside the repository root."""
    return Path(os.environ.get("EDGE_DETECT_SHARED") or REPO.parent / "shared")


def shared_path(*parts: str) -> Path:
    """Path inside the shared folder, or skip the test saying what is missing and why."""
    path = shared_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared data folder beside the repo "
                    f"(../shared, or set EDGE_DETECT_SHARED)")
    return path


def ended_events(path: Path) -> list[dict]:
    """The ``end`` records of an ``--events`` JSONL file (each event also has a ``start`` line)."""
    import json

    lines = path.read_text(encoding="utf-8").splitlines()
    return [rec for rec in map(json.loads, lines) if rec.get("state") == "end"]


def unseen_clips(esc10_dir: Path, mapping, category: str, limit: int, n: int = 3) -> list[Path]:
    """The last ``n`` clips of ``category`` that a build limited to ``limit`` clips per
    category and fold (``edge-train build --per-fold-limit``) did not train on."""
    from training.dataset import read_dataset

    trained = {c.filename for c in read_dataset(esc10_dir, mapping, limit)}
    clips = [c for c in read_dataset(esc10_dir, mapping)
             if c.category == category and c.filename not in trained]
    return [c.path for c in clips[-n:]]


def wait_until(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll ``check`` every 50 ms until it holds or ``seconds`` passed; its last answer."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)
    return check()
