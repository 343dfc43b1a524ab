"""A watched folder's record of the files it has read, kept on disk across restarts.

Without it a restarted watcher (a reboot, a service restart, an upgrade) reads every file
already in the folder again, and every old recording raises its alarm again. One JSON line is
appended (and fsynced) per file once its audio has been processed: ``{"name", "inode", "size",
"mtime_ns", "head", "tail"}`` (the last two: sha1 of the first and last 64 KiB). At start the
record is read (at most :data:`MAX_BYTES`) and rewritten atomically with only the names still
in the folder; it is rewritten again whenever dead lines outnumber the live ones, so it stays
about 200 bytes per file present.

A file is skipped after a restart if its inode, size and modification time are as recorded,
or — on FAT/exFAT, whose inode numbers change across remounts — its size, modification time and
the bytes at both ends are: anything else (the name reused by a new recording, possibly on a
recycled inode; a file written or touched while edge-detect was down) is read. The record
cannot be kept (a read-only state folder, a full disk): one error line, and the watcher goes
on without it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from edge_runtime.atomic import atomic_path
from edge_runtime.statedir import state_dir
from edge_runtime.text import printable

log = logging.getLogger("edge-detect")

MAX_BYTES = 64 << 20  # a larger record is not read (about 300,000 files)
PRINT_BYTES = 64 << 10  # bytes hashed at each end of a file: its fingerprint
HEADER_BYTES = 512  # skipped by the head hash: a WAV/AIFF header rewrites its sizes on append


class Signature(NamedTuple):
    """A read file as it was read: where (inode), how big and when, and a fingerprint of its
    content (sha1 of its first and last :data:`PRINT_BYTES`; "" when unknown)."""

    inode: int
    size: int
    mtime_ns: int
    head: str = ""
    tail: str = ""
    reported_s: float = -1.0  # where the last event reported from it ended (0: none; -1: ?)


def _sha1(path: Path, start: int, end: int) -> str:
    """sha1 of bytes ``[start, end)`` of ``path`` ("" when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            return hashlib.sha1(handle.read(max(0, end - start))).hexdigest()
    except OSError:
        return ""


def head_hash(path: Path, size: int) -> str:
    """The head fingerprint of a file of ``size`` bytes (past its header when large enough)."""
    skip = HEADER_BYTES if size > 2 * HEADER_BYTES else 0
    return _sha1(path, skip, min(size, PRINT_BYTES))


def read_signature(path: Path, content: bool = True) -> Signature:
    """``path``'s :class:`Signature` now (inode of the entry itself; -1 where unknown);
    ``content`` False: without the fingerprint (a stat, no read)."""
    try:
        inode = path.lstat().st_ino
    except OSError:
        return Signature(-1, -1, -1)
    try:
        st = path.stat()
    except OSError:
        return Signature(inode, -1, -1)
    size = st.st_size
    if not content or not stat.S_ISREG(st.st_mode):  # never open a FIFO: it blocks
        return Signature(inode, size, st.st_mtime_ns)
    return Signature(inode, size, st.st_mtime_ns, head_hash(path, size),
                     _sha1(path, max(0, size - PRINT_BYTES), size))


def same_content(before: Signature, now: Signature) -> bool:
    """The same file as read: the same inode, size and mtime, or — its inode renumbered (FAT
    and exFAT give new numbers after a remount or a cache eviction) — the same size, mtime and
    bytes at both ends. A new recording has another mtime; one only touched is read again
    rather than risk skipping a new recording that shares its size and silent ends."""
    if before[:3] == now[:3]:
        return True
    return (before[1:3] == now[1:3] and bool(before.head)
            and (before.head, before.tail) == (now.head, now.tail))
_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


def default_record_dir() -> Path:
    """``watched`` in the state folder (:func:`edge_runtime.statedir.state_dir`)."""
    return state_dir() / "watched"


def record_path(folder: str | os.PathLike[str],
                base: str | os.PathLike[str] | None = None) -> Path:
    """The record of ``folder``: one file per folder (its resolved path; not the source's
    name, which changes when another input is added) in ``base`` (default
    :func:`default_record_dir`), named after the folder for people."""
    resolved = os.fsencode(Path(folder).resolve())
    key = hashlib.sha256(resolved).hexdigest()[:16]
    slug = _SLUG.sub("_", Path(folder).resolve().name)[:40].strip("._") or "root"
    return Path(base or default_record_dir()) / f"{slug}-{key}.jsonl"


class ReadRecord:
    """The on-disk record of one watched folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.folder = printable(folder)
        self.broken = False  # a write failed: the watcher goes on without a record
        self._lines = 0  # entry lines in the file now

    def _fail(self, what: str, exc: OSError) -> None:
        if not self.broken:
            log.error("%s: cannot %s its record of read files %s (%s); a restart will read "
                      "its files again", self.folder, what, printable(self.path),
                      exc.strerror or exc)
        self.broken = True

    def load(self) -> dict[str, Signature]:
        """The files read before (an absent record: none)."""
        try:
            size = self.path.stat().st_size
            if size > MAX_BYTES:
                log.warning("%s: its record of read files %s is %d MB, more than %d; not read "
                            "(files present are read again)", self.folder,
                            printable(self.path), size >> 20, MAX_BYTES >> 20)
                return {}
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            self._fail("read", exc)
            return {}
        out: dict[str, Signature] = {}
        bad = 0
        for line in text.splitlines():
            try:
                item = json.loads(line)
                if "folder" in item:
                    continue
                sig = Signature(int(item["inode"]), int(item["size"]), int(item["mtime_ns"]),
                                str(item.get("head", "")), str(item.get("tail", "")),
                                float(item.get("reported_s", -1.0)))
                out[str(item["name"])] = sig
            except (ValueError, TypeError, KeyError, OverflowError):
                bad += 1  # a line cut by a power loss, or not ours
        if bad:
            log.warning("%s: %d unreadable line(s) in its record of read files %s skipped",
                        self.folder, bad, printable(self.path))
        return out

    def rewrite(self, entries: dict[str, Signature]) -> None:
        """Replace the record with ``entries`` (atomically)."""
        if self.broken:
            return
        lines = [json.dumps({"folder": self.folder})]
        lines += [_line(name, sig) for name, sig in entries.items()]
        try:
            with atomic_path(self.path) as tmp:
                tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        except OSError as exc:
            self._fail("write", exc)
            return
        self._lines = len(entries)

    def add(self, name: str, sig: Signature, entries: dict[str, Signature]) -> None:
        """Append one read file; rewrite from ``entries`` (every file read and still present)
        when most lines of the file have gone dead."""
        if self.broken:
            return
        if self._lines > 2 * len(entries) + 1000:
            self.rewrite(entries)
            return
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, (_line(name, sig) + "\n").encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self._fail("write", exc)
            return
        self._lines += 1


def _line(name: str, sig: Signature) -> str:
    """One entry; names that are not valid UTF-8 keep their bytes (escaped surrogates)."""
    return json.dumps({"name": name, **Signature(*sig)._asdict()})
