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
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from edge_runtime.options import BY_NAME, OptionError


class ConfigError(ValueError):
    """Unreadable or invalid config file (one-line message)."""


MAX_CONFIG_BYTES = 1 << 20
SECRET = re.compile(r"[A-Za-z][\w+.-]*://[^/@\s]*:[^@\s]*@"  # scheme://user:password@
                    r"|[?&](?:password|passwd|pass|pwd|token|auth|key|secret|apikey|"
                    r"access_token)=", re.IGNORECASE)  # ...?password=, ?auth=
TABLES = ("sources",)  # [sources.NAME] input = "...": named inputs, see edge_runtime.serve


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``path`` and return ``{option_name: checked value}``, names in snake_case.

    Unknown keys, keys that only make sense on the command line, wrong types and values out
    of range are a :class:`ConfigError` naming the key.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:  # a bounded read: a pipe or device has no size to check
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: larger than 1 MiB; not a config file")
        data = tomllib.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    if isinstance(data.get("edge-detect"), dict):
        table = data.pop("edge-detect")
        both = sorted(set(data) & set(table))
        if both:
            raise ConfigError(f"{path}: {both[0]} is set both at the top level and in "
                              "[edge-detect]; keep one")
        data = {**data, **table}
    known = sorted(name for name, o in BY_NAME.items() if o.in_config)
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name in TABLES:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key} must be a table ([{key}.NAME] sections)")
            values[name] = value  # checked where it is used (edge_runtime.serve)
            continue
        option = BY_NAME.get(name)
        if option is None or not option.in_config:
            where = "is only a command-line option" if option else "is not an option"
            raise ConfigError(f"{path}: {key} {where}; known keys: {', '.join(known)}")
        if name in values:
            raise ConfigError(f"{path}: {key} is given twice")
        try:
            values[name] = option.parse_config(value)
        except OptionError as exc:
            raise ConfigError(f"{path}: {key} {exc}") from None
    return values


def merge(defaults: dict[str, Any], from_file: dict[str, Any],
          from_cli: dict[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by the config file, overridden by options given on the command line."""
    return {**defaults, **from_file, **from_cli}


def readable_secret(path: str | os.PathLike[str]) -> bool:
    """Whether the config file at ``path`` holds a password or token (a URL's) and every user
    of the machine may read it."""
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        with open(path, "rb") as fh:
            return bool(SECRET.search(fh.read(MAX_CONFIG_BYTES).decode("utf-8", "replace")))
    except OSError:
        return False
