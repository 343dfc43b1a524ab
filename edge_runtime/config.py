"""TOML configuration for ``edge-detect``: option names as keys, the command line overrides.

Example ``/etc/edge-detect.toml``::

    input = "mic"
    device = "USB"
    model = "/opt/edge-detect/models_onnx"
    events = "/var/log/edge-detect/events.jsonl"
    threshold = 0.6
    cooldown = 3.0

Keys are the long option names (``save-clips`` or ``save_clips``); an ``[edge-detect]`` table
is accepted too. Unknown keys are an error, so a typo never goes unnoticed.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Unreadable or invalid config file (one-line message)."""


def load(path: str | os.PathLike[str], known: set[str]) -> dict[str, Any]:
    """Read ``path`` and return ``{option_name: value}`` with names normalised to snake_case."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    if isinstance(data.get("edge-detect"), dict):
        data = {**{k: v for k, v in data.items() if k != "edge-detect"}, **data["edge-detect"]}
    values = {key.replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    return values


def merge(defaults: dict[str, Any], from_file: dict[str, Any],
          from_cli: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by the config file, overridden by options given on the command line."""
    return {**defaults, **from_file, **from_cli}
