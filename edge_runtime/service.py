"""A systemd unit that runs ``edge-detect`` with the options it was generated from."""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from edge_runtime.atomic import write_bytes
from edge_runtime.config import SECRET
from edge_runtime.text import printable

log = logging.getLogger("edge-detect")

UNIT_FLAGS = ("--write-systemd-unit", "--print-systemd-unit", "--service-user")
STATE_DIR = "edge-detect"  # StateDirectory=: /var/lib/edge-detect, owned by the service user
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
            "%": "%%", "$": "$$"}


def systemd_quote(arg: str) -> str:
    """One ExecStart= argument: double-quoted, with systemd's C escapes for quotes,
    backslashes and every control character, ``%%`` for specifiers and ``$$`` for variables.
    A newline can therefore never end the line and start a directive of its own."""
    out = []
    for ch in arg:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # an undecodable byte (surrogateescape)
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plain_path(value: str, what: str) -> str:
    """A path for a directive that takes no quoting: refuse what could break the line."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xDC80 <= ord(ch) <= 0xDCFF for ch in value):
        raise ValueError(f"{what} {value!r} contains control characters; not usable in a unit")
    return value.replace("%", "%%")


def executable() -> str:
    """Absolute path of the running ``edge-detect`` (falls back to ``python -m``)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "edge-detect" and argv0.exists():
        return str(argv0.resolve())
    found = shutil.which("edge-detect")
    return found or f"{sys.executable} -m edge_runtime.cli"


def executable_argv() -> list[str]:
    """:func:`executable` as an argument list."""
    found = executable()
    prefix = f"{sys.executable} -m "
    return [sys.executable, "-m", found[len(prefix):]] if found.startswith(prefix) else [found]


def service_args(argv: list[str]) -> list[str]:
    """``argv`` without the unit-writing options (and their values)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--write-systemd-unit", "--service-user"):
            skip = True
            continue
        if arg.startswith(UNIT_FLAGS):
            continue
        out.append(arg)
    return out




def secret_flags(args: list[str]) -> list[str]:
    """Options of ``args`` whose value is a URL with a password (``--mqtt``, ``--input``,
    ``--notify``): a unit file and ``ps`` show them to every user of the machine."""
    flags, flag = [], "an argument"
    for arg in args:
        name, _, value = arg.partition("=") if arg.startswith("--") else (flag, "", arg)
        if SECRET.search(value or ""):
            flags.append(name)
        flag = arg if arg.startswith("--") and "=" not in arg else "an argument"
    return sorted(set(flags))


def private_tmp(path: Path) -> str:
    """``/tmp`` or ``/var/tmp`` when ``path`` lies under it (PrivateTmp= replaces both), else
    ""."""
    parts = path.parts
    if parts[:2] == ("/", "tmp"):
        return "/tmp"
    return "/var/tmp" if parts[:3] == ("/", "var", "tmp") else ""


def _owns(user: str, path: Path) -> bool:
    """Whether ``user`` may write at ``path`` as far as homes go: root anywhere, anyone
    outside /root and /home, a user in their own home (``/home/<user>`` or its owner)."""
    if user == "root" or path.parts[1:2] not in (("root",), ("home",)):
        return True
    home = Path(*path.parts[:3]) if path.parts[1] == "home" else Path("/root")
    if home.name == user:
        return True
    try:
        import pwd

        return home.stat().st_uid == pwd.getpwnam(user).pw_uid
    except (OSError, KeyError, ImportError):
        return False


def unit_problems(opts: dict[str, Any], specs: list[Any], workdir: Path,
                  user: str | None) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for running these options as a service: inputs that end (one
    file, stdin, ``--once``) would be read again at every ``Restart=always``; paths the
    sandbox hides (``PrivateTmp``) or the service user cannot write."""
    refusals, warnings = [], []
    if opts.get("once"):
        refusals.append("--once exits when the folder is read; a service would read it again "
                        "every 5 s (Restart=always): leave --once out to keep watching")
    for spec in specs:
        if spec.input == "-":
            refusals.append("--input -: a service has no stdin; give it mic, a folder or a "
                            "stream URL")
            continue
        if spec.input == "mic" or "://" in spec.input:
            continue
        path = Path(workdir, spec.input).resolve()
        if path.is_file():
            refusals.append(f"--input {spec.input}: one file ends; a service would read it "
                            "again every 5 s (Restart=always): watch its folder instead")
        elif private_tmp(path):
            what = f"input {spec.input}" + (f" (source {spec.name})" if spec.name else "")
            warnings.append(f"{what} is under {private_tmp(path)}, which the unit's "
                            "PrivateTmp=yes replaces: the service will not see it there")
    for flag in (*WRITTEN, "model", "config", "mqtt_ca"):
        value = opts.get(flag)
        if not value:
            continue
        path = Path(workdir, value).resolve()
        name = "--" + flag.replace("_", "-")
        if private_tmp(workdir) and path.is_relative_to(workdir.resolve()):
            continue  # the working directory's own warning says it
        if private_tmp(path):
            warnings.append(f"{name} {path} is under {private_tmp(path)}, which the unit's "
                            "PrivateTmp=yes replaces: the service will not see it there")
        elif flag in WRITTEN and user and not _owns(user, path):
            warnings.append(f"{name} {path}: the service runs as {user}, which cannot write in "
                            "another user's home (ProtectHome=read-only); use a folder under "
                            f"/var/lib/{STATE_DIR} or --service-user")
    return refusals, warnings


WRITTEN = ("events", "save_clips", "mqtt_spool", "watch_state")  # options the service writes


def writable_paths(args: list[str], workdir: Path,
                   opts: dict[str, Any] | None = None) -> list[str]:
    """Folders the service writes to (``--events`` file's folder, ``--save-clips``,
    ``--mqtt-spool``, ``--watch-state``), from the command line and, with ``opts`` (the
    merged options), from a ``--config`` file too."""
    values: list[tuple[str, str]] = []
    for i, arg in enumerate(args):
        for name in WRITTEN:
            flag = "--" + name.replace("_", "-")
            value = (args[i + 1] if arg == flag and i + 1 < len(args)
                     else arg[len(flag) + 1:] if arg.startswith(flag + "=") else None)
            if value:
                values.append((name, value))
    values += [(name, str(opts[name])) for name in WRITTEN if (opts or {}).get(name)]
    paths = []
    for name, value in values:
        path = Path(os.path.normpath(workdir / value))
        text = str(path.parent if name == "events" else path)
        if text not in paths:
            paths.append(text)
    return paths


def unit_text(args: list[str], user: str | None = "edge-detect",
              workdir: str | os.PathLike[str] | None = None,
              opts: dict[str, Any] | None = None) -> str:
    """The unit file: a dedicated user, systemd's sandboxing, ``Restart=always``, SIGTERM for
    a clean stop. Every argument is escaped for systemd (see :func:`systemd_quote`)."""
    workdir = Path(workdir or Path.cwd()).resolve()
    if private_tmp(workdir):
        log.warning("working directory %s is under %s, which the unit's PrivateTmp=yes "
                    "hides from the service: it will not start there; install elsewhere",
                    printable(workdir), private_tmp(workdir))
    exec_start = " ".join(systemd_quote(a) for a in [*executable_argv(), *args])
    lines = [
        "[Unit]",
        "Description=edge-detect danger-sound detector",
        "Wants=sound.target network-online.target",
        "After=sound.target network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        f"WorkingDirectory={plain_path(str(workdir), 'working directory')}",
        "Environment=PYTHONUNBUFFERED=1",
    ]
    if user:
        if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}\$?", user):
            raise ValueError(f"--service-user {user!r} is not a valid user name")
        lines.append(f"User={user}")
    lines += [
        "SupplementaryGroups=audio",
        f"StateDirectory={STATE_DIR}",
        f"LogsDirectory={STATE_DIR}",  # /var/log/edge-detect, created for the service user
        "Restart=always",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=30",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectControlGroups=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
    ]
    made = (Path("/var/lib", STATE_DIR), Path("/var/log", STATE_DIR))  # systemd makes these
    for path in writable_paths(args, workdir, opts):
        if not (Path(path).is_dir() or any(Path(path).is_relative_to(m) for m in made)
                or (user and not _owns(user, Path(path)))):  # that one is warned about
            quoted = shlex.quote(printable(path))
            log.warning("%s does not exist yet: create it before starting the service (sudo "
                        "mkdir -p %s && sudo chown %s %s); ProtectSystem=strict would refuse "
                        "to let the service create it", printable(path), quoted,
                        user or "root", quoted)
        lines.append("ReadWritePaths=" + systemd_quote("-" + plain_path(path, "output path")))
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def write_unit(path: str | os.PathLike[str], text: str) -> Path:
    """Write the unit atomically (tmp + rename, the umask honoured); readable by its owner
    alone when it holds a password or token (systemd reads it as root)."""
    return write_bytes(path, text.encode("utf-8"), 0o600 if SECRET.search(text) else 0o666)
