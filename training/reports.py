"""Where workbench outputs go and how reports are written (shared by every command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime import atomic
from edge_runtime.manifest import WORKBENCH_DIR, json_safe

WORKBENCH = WORKBENCH_DIR  # inside a model dir: caches and pickles the device never loads


def clean_json(value: Any) -> Any:
    """NaN/inf → None and numpy → Python, so report.json is strict JSON."""
    return json_safe(value)


def save_report(out: Path, stem: str, report: dict[str, Any], markdown: str) -> None:
    """``<stem>.json`` (strict JSON) and ``<stem>.md``, each written atomically."""
    atomic.write_json(out / f"{stem}.json", clean_json(report), allow_nan=False)
    atomic.write_text(out / f"{stem}.md", markdown)


def fmt(value: float | None, digits: int = 3) -> str:
    """A number for a markdown table; "—" where there is none."""
    return "—" if value is None else f"{value:.{digits}f}"
