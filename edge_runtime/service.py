"""A systemd unit that runs ``edge-detect`` with the options it was generated from."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

UNIT_FLAGS = ("--write-systemd-unit", "--print-systemd-unit")


def executable() -> str:
    """Absolute path of the running ``edge-detect`` (falls back to ``python -m``)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "edge-detect" and argv0.exists():
        return str(argv0.resolve())
    found = shutil.which("edge-detect")
    return found or f"{sys.executable} -m edge_runtime.cli"


def service_args(argv: list[str]) -> list[str]:
    """``argv`` without the unit-writing options (and their values)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--write-systemd-unit":
            skip = True
            continue
        if arg.startswith(UNIT_FLAGS):
            continue
        out.append(arg)
    return out


def unit_text(args: list[str], user: str | None = None,
              workdir: str | os.PathLike[str] | None = None) -> str:
    """The unit file: restart on failure, SIGTERM for a clean stop, audio group access."""
    exec_start = " ".join([executable(), *(shlex.quote(a) for a in args)])
    lines = [
        "[Unit]",
        "Description=edge-detect danger-sound detector",
        "Wants=sound.target",
        "After=sound.target network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={Path(workdir or Path.cwd()).resolve()}",
        "Environment=PYTHONUNBUFFERED=1",
        "SupplementaryGroups=audio",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
    ]
    if user:
        lines.append(f"User={user}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def write_unit(path: str | os.PathLike[str], text: str) -> Path:
    """Write the unit atomically (tmp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
