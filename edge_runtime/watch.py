"""A watched folder: each audio file is yielded once, when it is complete.

Complete means: its size, mtime and inode have not changed for ``settle_s`` seconds, *and* a
RIFF/AIFF header that states the file's total size is satisfied (a file copied slowly, header
first, is not read half-written even when the writer pauses longer than ``settle_s``). A file
whose header still promises more bytes is read anyway once it was last modified more than
``incomplete_s`` ago (default max(30 s, 10 × settle): it is then a truncated file and is decoded
up to where it ends). With ``once``, the files present at start are not waited for.

A file is read once, also across restarts when a :class:`~edge_runtime.watch_record.ReadRecord`
is given (the daemon keeps one per watched folder). If it only grows later (its first bytes
unchanged: a copy or a recorder that paused), it is read again as a continuation
(:attr:`FolderWatcher.continued`: the reader reports only what follows); a *new* file
under the same name (another inode, e.g. renamed over the old one, or a new recording written
over it in place) is read, and so is one that was empty or unreadable when read, once
written. Writers that pause longer than ``settle_s`` in formats without a size header (MP3,
OGG, streamed FLAC, MP4) should write to a temporary name (``.part``, ``.tmp``, a leading dot)
and rename when done, or raise ``--settle``.

Linux: inotify wakes the loop when the folder changes and names the files that changed, so an
idle folder of 10,000 files costs nothing but a full listing every ``rescan_s``, and of the
files already read only those inotify named are stat'ed (all of them when no inotify, or when
events were lost); elsewhere the folder's mtime is polled and the listing is read only when it
changed, each read file stat'ed at each listing. Files waiting to settle are stat'ed. The memory
of read files holds only names still present (a deleted file is forgotten). A folder that
cannot be listed (deleted, unmounted) is reported with backoff, not every poll.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import select
import stat
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from edge_runtime.audio import header_incomplete
from edge_runtime.backoff import RateLimitedLog
from edge_runtime.ffmpeg_file import FFMPEG_SUFFIXES
from edge_runtime.text import printable
from edge_runtime.watch_record import ReadRecord, Signature, head_hash, read_signature, same_content

log = logging.getLogger("edge-detect")

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff",
                            ".au", ".caf", ".w64", ".rf64"}) | FFMPEG_SUFFIXES
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".download", ".swp", "~")

# inotify(7) event bits
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_DELETE_SELF, _IN_MOVE_SELF, _IN_Q_OVERFLOW, _IN_IGNORED = 0x400, 0x800, 0x4000, 0x8000
MAX_CHANGED = 100_000  # names remembered between two listings; more: every read file is checked
_MASK = (_IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
         | _IN_DELETE | _IN_DELETE_SELF | _IN_MOVE_SELF)


def is_candidate(path: Path) -> bool:
    """An audio-looking name that is not hidden and not a temporary/partial download."""
    name = path.name
    return (not name.startswith(".") and not name.endswith(TEMP_SUFFIXES)
            and path.suffix.lower() in AUDIO_SUFFIXES)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library already loaded into this process (no ``ldconfig`` subprocess)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


class Inotify:
    """Linux inotify on one directory, through libc (no thread, no dependency)."""

    def __init__(self, directory: Path) -> None:
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            raise OSError("no inotify on this platform")
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(self.fd, os.fsencode(directory), _MASK) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, os.strerror(err))
        self.lost = False  # the watched directory itself went away
        self.changed: set[str] = set()  # names with events since :meth:`take_changed`
        self.overflow = False  # events were lost (the kernel's queue or MAX_CHANGED)

    def wait(self, timeout: float) -> bool:
        """True if anything happened in the directory within ``timeout`` seconds."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            offset = 0
            while offset + 16 <= len(data):
                _wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                if mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED):
                    self.lost = True
                if mask & _IN_Q_OVERFLOW or len(self.changed) >= MAX_CHANGED:
                    self.overflow = True
                elif length:
                    raw = data[offset + 16:offset + 16 + length].split(b"\0", 1)[0]
                    self.changed.add(os.fsdecode(raw))
                offset += 16 + length

    def take_changed(self) -> set[str] | None:
        """Names that had events since the last call; None when some may have been missed."""
        changed, self.changed = self.changed, set()
        if self.overflow:
            self.overflow = False
            return None
        return changed

    def close(self) -> None:
        os.close(self.fd)


class FolderWatcher:
    """Yields each complete audio file of ``directory`` once (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str], once: bool = False,
                 settle_s: float = 1.0, poll_s: float = 0.5, rescan_s: float = 30.0,
                 incomplete_s: float | None = None, stop: threading.Event | None = None,
                 use_inotify: bool = True, record: ReadRecord | None = None) -> None:
        self.directory = Path(directory)
        self.name = printable(self.directory)
        self.once, self.settle_s, self.poll_s, self.rescan_s = once, settle_s, poll_s, rescan_s
        self.incomplete_s = (max(30.0, 10 * settle_s) if incomplete_s is None
                             else incomplete_s)
        self.stop = stop or threading.Event()
        self.use_inotify = use_inotify and not once
        self.done: dict[str, Signature] = {}  # name → the file as it was read
        self._failed: set[str] = set()  # read files that gave no audio: read again once changed
        # grown since read: name → where its reported events ended before (reported_s)
        self.continued: dict[str, float] = {}
        self.record = None if once else record  # the files read before a restart
        self.pending: dict[str, tuple[tuple[int, int, int] | None, float]] = {}
        self.initial: set[str] | None = None
        self.errors = RateLimitedLog()
        self._notify: Inotify | None = None
        self._notify_fresh = False  # created since the last listing: it saw nothing before
        self._dir_mtime = -1
        self._next_scan = 0.0

    def _scan(self, now: float) -> bool:
        """Read the listing; False if the directory cannot be listed."""
        try:
            with os.scandir(self.directory) as it:
                entries = {e.name: e for e in it if is_candidate(Path(e.name))}
        except OSError as exc:
            self.errors.error("%s: cannot list the watched folder (%s)", self.name,
                              exc.strerror or exc)
            if self._notify is not None:
                self._notify.close()
                self._notify = None
            return False
        self.errors.ok("%s: the watched folder can be listed again", self.name)
        if self.initial is None:
            self.initial = set(entries)
            self._remember(entries)
        for gone in [n for n in self.done if n not in entries]:
            del self.done[gone]
            self._failed.discard(gone)
            self.continued.pop(gone, None)
        for gone in [n for n in self.pending if n not in entries]:
            del self.pending[gone]
            self.continued.pop(gone, None)
        changed = self._take_changed()
        for name, entry in entries.items():
            if (name in self.done and (changed is None or name in changed)
                    and self._changed_since_read(name, entry)):
                del self.done[name]
            if name not in self.done and name not in self.pending:
                self.pending[name] = (None, now)
        self._next_scan = now + self.rescan_s
        return True

    def _take_changed(self) -> set[str] | None:
        """Names inotify saw change since the last listing; None: check every read file (no
        inotify, a watch just (re)created, events lost)."""
        if self._notify is None:
            return None
        changed = self._notify.take_changed()
        if self._notify_fresh:
            self._notify_fresh = False
            return None
        return changed

    def _remember(self, entries: dict[str, os.DirEntry[str]]) -> None:
        """First listing: files the record says were read before, and are unchanged (same
        inode, size and mtime), are not read again; the record keeps only names present."""
        if self.record is None:
            return
        before = self.record.load()
        for name in before.keys() & entries.keys():
            path = self.directory / name
            if read_signature(path, content=False)[:3] == before[name][:3]:
                self.done[name] = before[name]  # a stat: most files, unchanged
            elif same_content(before[name], now := read_signature(path)):
                self.done[name] = now
            else:
                log.info("%s: changed since it was read before the restart; reading it",
                         printable(self.directory / name))
        if before:
            log.info("%s: %d file(s) already read before the restart are not read again "
                     "(record: %s)", self.name, len(self.done), printable(self.record.path))
        else:
            log.info("%s: the files read are recorded in %s (a restart does not read them "
                     "again)", self.name, printable(self.record.path))
        self.record.rewrite(self._readable())

    def _readable(self) -> dict[str, Signature]:
        """The read files a record keeps: not those that gave no audio (retried at start)."""
        return {n: sig for n, sig in self.done.items() if n not in self._failed}

    def reported(self, path: Path, end_s: float) -> None:
        """The file just yielded was read; its last reported event ended at ``end_s`` (0:
        none). A continuation holds back events that began before it."""
        name = path.name
        if name in self.done:
            before = self.continued.get(name, 0.0)
            self.done[name] = self.done[name]._replace(reported_s=max(before, end_s))

    def quiet_until(self, path: Path) -> float | None:
        """For a continuation: where the events already reported from it end (None: read it
        whole — not a continuation, or not known, e.g. grown while edge-detect was down)."""
        before = self.continued.get(path.name, -1.0)
        return before if before >= 0 else None

    def failed(self, path: Path) -> None:
        """The file just yielded gave no audio (unreadable, half-copied): it is read again
        once it changes, and not kept in the record (a restart tries it again). A continuation
        keeps where its earlier reading's events ended: if it grows again, only later events
        are reported (read whole, its first events would repeat)."""
        name = path.name
        self._failed.add(name)
        if name in self.continued and name in self.done:
            self.done[name] = self.done[name]._replace(reported_s=self.continued[name])

    def _changed_since_read(self, name: str, entry: os.DirEntry[str]) -> bool:
        """Read it again? Yes for a new file under the name (another inode, unless FAT
        renumbered the same file), for a file written over in place (anything but growth
        behind the same first bytes), and for a file that was empty or unreadable when read
        and has been written since (a recorder or an upload that creates the file first, a
        copy that paused). A file that only grew after its audio was read (the same first
        bytes) is read again as a continuation (:attr:`continued`): the reader reports only
        the events after the part it read before."""
        before = self.done[name]
        self.continued.pop(name, None)
        if entry.inode() != before.inode:  # renamed over it, or FAT/exFAT renumbering
            now = read_signature(self.directory / name)
            if same_content(before, now):
                self.done[name] = now
                return False
            return True
        try:
            st = entry.stat()
        except OSError:
            return False
        if before.size < 0 or (st.st_size, st.st_mtime_ns) == before[1:3]:
            return False
        shown = printable(self.directory / name)
        grown = (st.st_size > before.size > 0 and bool(before.head)
                 and head_hash(self.directory / name, before.size) == before.head)
        if before.size == 0 or (name in self._failed and not (grown and before.reported_s >= 0)):
            log.info("%s: %s when first seen, written since; reading it now", shown,
                     "empty" if before.size == 0 else "unreadable")
            return True
        if not grown:
            log.info("%s: changed since it was read (a new recording under the same name, or "
                     "only touched); reading it again", shown)
            return True
        log.info("%s: grew since it was read (%d → %d bytes): read again, reporting only "
                 "events that run on past those already reported", shown, before.size,
                 st.st_size)
        self.continued[name] = before.reported_s
        return True

    def _ready(self, now: float) -> list[str]:
        """Names of pending files that are complete now (stat'ing only those)."""
        out = []
        for name in sorted(self.pending):
            path = self.directory / name
            try:
                st = path.stat()
            except FileNotFoundError:
                if path.is_symlink():
                    out.append(name)  # a broken link: reported once by the decoder
                else:
                    del self.pending[name]
                    self.continued.pop(name, None)
                continue
            except OSError:
                out.append(name)  # a symlink loop, an unreadable entry: reported once
                continue
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
            last, since = self.pending[name]
            if (st.st_size == 0 and not self.once and stat.S_ISREG(st.st_mode)
                    and max(time.time() - st.st_mtime, now - since) < self.incomplete_s):
                self.pending[name] = (sig, since if sig == last else now)
                continue  # created, not written yet: waited for quietly (incomplete_s)
            if sig != last:
                self.pending[name] = (sig, now)
                if last is not None:
                    continue  # still changing
            age = time.time() - st.st_mtime
            if now - since < self.settle_s and age < self.settle_s:
                continue
            initial = self.once and self.initial is not None and name in self.initial
            if (not initial and stat.S_ISREG(st.st_mode)  # never open a FIFO: it blocks
                    and header_incomplete(path, st.st_size)
                    and max(age, now - since) < self.incomplete_s):  # a future mtime: not forever
                continue  # header promises more: a slow writer, wait
            out.append(name)
        return out

    def _wait(self, started: float) -> bool:
        """Sleep until the next poll; True if inotify saw a change."""
        remaining = self.poll_s - (time.monotonic() - started)
        if self._notify is None:
            self.stop.wait(max(0.0, remaining))
            return False
        woke = self._notify.wait(max(0.0, min(remaining, self.poll_s)))
        if self._notify.lost:
            self._notify.close()
            self._notify = None
            return True
        if woke:  # at most one pass per poll_s, however busy the folder
            self.stop.wait(max(0.0, self.poll_s - (time.monotonic() - started)))
        return woke

    def _changed(self) -> bool:
        """Polling fallback: did the folder's own mtime change (a name added/removed)?"""
        try:
            mtime = self.directory.stat().st_mtime_ns
        except OSError:
            return True
        changed, self._dir_mtime = mtime != self._dir_mtime, mtime
        return changed

    def __iter__(self) -> Iterator[Path]:
        woke = True
        while not self.stop.is_set():
            started = now = time.monotonic()
            if self.use_inotify and self._notify is None and (woke or now >= self._next_scan):
                try:
                    self._notify = Inotify(self.directory)
                    self._notify_fresh = woke = True
                except OSError:
                    self._notify = None
            due = now >= self._next_scan or woke or (self._notify is None and self._changed())
            if due and not self._scan(now) and self.once:
                return
            for name in self._ready(now):
                del self.pending[name]
                path = self.directory / name
                self.done[name] = read_signature(path)
                self._failed.discard(name)
                yield path
                self.continued.pop(name, None)
                if self.stop.is_set():
                    return  # perhaps cut short: not recorded, read again after a restart
                if self.record is not None and name not in self._failed:
                    self.record.add(name, self.done[name], self._readable())
            if self.once and self.initial is not None and not (self.initial & set(self.pending)):
                return
            woke = self._wait(started)

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
