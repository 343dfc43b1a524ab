"""Sources → runners: one or several named inputs served with one Detector (one set of ONNX
sessions). Each source has its own thread, stream state, event numbering and clip history;
the console and JSON sinks are shared (serialised by a lock). Every event names its source.

Specs: ``mic`` (with ``device``), ``-`` (raw PCM on stdin), a URL (``rtsp://``, ``http(s)://``,
anything ffmpeg reads), a directory (watched) or a file. Named: ``--input porch=rtsp://cam/a``
(repeatable) or a TOML table ``[sources.porch] input = "rtsp://cam/a"``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.audio import AudioError
from edge_runtime.options import BY_NAME
from edge_runtime.statedir import NoStateDir
from edge_runtime.text import printable
from edge_runtime.watch_record import ReadRecord, record_path

log = logging.getLogger("edge-detect")

NAME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]{0,31})=(.+)$", re.S)
MAX_SOURCES = 16
# a stream URL with its "://" mistyped ("rtsp:/cam", "rtsp//cam"): taken for a missing file
MISTYPED_URL = re.compile(r"^(rtsps?|rtmps?|https?|udp|rtp|srt|tcp)(?::/|//|:)(?!/)(.+)$",
                          re.I | re.S)
EXIT_SOURCE_LOST = 3  # a live source could not be reopened in time


@dataclass
class SourceSpec:
    """One input: its name (None: the single unnamed source), spec and device."""

    name: str | None
    input: str
    device: str | None = None

    def label(self, what: str) -> str:
        return self.name if self.name else what


def parse_sources(inputs: Any, device: str | None,
                  tables: dict[str, Any] | None = None) -> list[SourceSpec]:
    """``--input`` values (``SPEC`` or ``NAME=SPEC``, str or list; none: the microphone,
    unless tables name the sources) and ``[sources.NAME]`` tables → specs; an explicit
    ``mic`` is served beside the tables. A value that is an existing path is a path even with
    ``=`` in it. Raises ``ValueError`` (one line) on duplicates or bad tables."""
    values = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if not values and not tables:
        values = ["mic"]  # the default input; named [sources] tables replace it
    specs: list[SourceSpec] = []
    for value in values:
        match = NAME_RE.match(str(value))
        if match and not os.path.lexists(str(value)):  # take=2.wav: a file, not a name
            specs.append(SourceSpec(match.group(1), match.group(2), device))
        else:
            specs.append(SourceSpec(None, str(value), device))
    for name, table in (tables or {}).items():
        if not isinstance(table, dict) or not isinstance(table.get("input"), str):
            raise ValueError(f"[sources.{name}] needs input = \"mic|DIR|FILE|-|URL\"")
        unknown = set(table) - {"input", "device"}
        if unknown:
            raise ValueError(f"[sources.{name}]: unknown key(s) {', '.join(sorted(unknown))}; "
                             "known: input, device")
        if not NAME_RE.match(f"{name}=x"):
            raise ValueError(f"[sources.{name}]: a name is letters, digits, _ and -")
        own = table.get("device", device)
        if isinstance(own, int) and not isinstance(own, bool):  # device = 2: an index
            own = str(own)
        specs.append(SourceSpec(name, table["input"], own))
    for spec in specs:
        where = f"[sources.{spec.name}]" if spec.name in (tables or {}) else "--input"
        if not spec.input.strip() or "\0" in spec.input:
            raise ValueError(f"{where}: {spec.input!r} is not an input; give mic, DIR, FILE, "
                             "- or URL")
        typo = MISTYPED_URL.match(spec.input)
        if typo and not os.path.lexists(spec.input):  # rtsp:/cam, rtsp//cam: not a file
            raise ValueError(f"{where}: {printable(spec.input)} is neither a file nor a URL; "
                             f"did you mean {typo.group(1)}://{typo.group(2)}?")
        if spec.device is not None and not isinstance(spec.device, str):
            raise ValueError(f"{where}: device must be an index or a name substring, "
                             f"got {spec.device!r}")
    if len(specs) > 1:
        for i, spec in enumerate(specs):
            if spec.name is None:
                spec.name = f"input{i + 1}"
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"source names must be unique: {', '.join(map(str, names))}")
    if len(specs) > MAX_SOURCES:
        raise ValueError(f"at most {MAX_SOURCES} sources per process")
    if sum(s.input == "-" for s in specs) > 1:
        raise ValueError("only one source can read stdin ('-')")
    if not specs:
        raise ValueError("no input given")
    return specs


class Serialised:
    """A sink shared by several source threads: its calls run one at a time. Attributes are
    forwarded, so ``isinstance(wrapper, Observer)`` holds exactly when it does for the sink."""

    def __init__(self, sink: Any, lock: threading.Lock) -> None:
        self._sink, self._lock = sink, lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._sink, name)
        if not callable(value) or name.startswith("_"):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


def renamed(stream: Any, spec: SourceSpec, what: str | None = None) -> Any:
    """Prefix the stream's source with the source's name (named sources only)."""
    if spec.name:
        stream.source = f"{spec.name}:{what or stream.source}" if what != "" else spec.name
    return stream


def serve(spec: SourceSpec, runner: Any, opts: dict[str, Any], stop: threading.Event) -> int:
    """Serve one source to its end (or until ``stop``); returns an exit code."""
    from edge_runtime.live import Supervisor
    from edge_runtime.sources import file_stream, pcm_stream
    from edge_runtime.watch import FolderWatcher

    rate = runner.detector.sample_rate
    source = spec.input
    def option(name: str) -> Any:  # a caller's partial opts fall back to the declared default
        return opts[name] if opts.get(name) is not None else BY_NAME[name].default

    max_s = float(option("max_file_duration"))
    live = {"stop": stop, "sample_rate": rate, "on_health": runner.report_health,
            "reopen_timeout_s": float(option("reopen_timeout")),
            "flat_s": float(option("flat_timeout"))}
    stall_s = float(option("stall_timeout"))
    if source == "mic":
        from edge_runtime.mic import PortAudioMissing, mic_stream, reset_portaudio

        def open_mic(reopening: bool) -> Any:
            if reopening:
                reset_portaudio()
            return renamed(mic_stream(spec.device, rate, stop, stall_s=stall_s), spec, "")

        ok = Supervisor(spec.label(f"mic {spec.device or 'default'}"), open_mic,
                        runner.run_stream, fatal_errors=(PortAudioMissing,), **live)()
        return 0 if ok else EXIT_SOURCE_LOST
    from edge_runtime.netsource import (
        FfmpegMissing,
        SourceError,
        UnknownProtocol,
        is_url,
        redact,
        url_stream,
    )

    if is_url(source):
        def open_url(_reopening: bool) -> Any:
            return url_stream(source, rate, stop, name=spec.name, stall_s=stall_s,
                              once=bool(opts.get("once")))

        ok = Supervisor(spec.label(redact(source)), open_url, runner.run_stream,
                        retry_errors=(SourceError, OSError),
                        fatal_errors=(FfmpegMissing, UnknownProtocol),
                        **live)()
        return 0 if ok else EXIT_SOURCE_LOST
    if source == "-":
        runner.run_stream(renamed(pcm_stream(None, int(opts["rate"]), opts["format"],
                                             int(opts["channels"]), rate, stop), spec, ""))
        return 0
    def one_file(path: str | Path, quiet_until_s: float | None = None) -> bool:
        """Score one file; an unusable one is logged in one line and counted as failed.
        ``quiet_until_s``: it grew since it was read; events before that were reported."""
        try:
            return runner.run_stream(renamed(file_stream(path, rate, max_s, stop), spec),
                                     quiet_until_s)
        except AudioError as exc:
            if stop.is_set():  # cut short: read again at the next start, not its fault
                log.info("%s: stopped before it was read", printable(path))
                return False
            log.error("%s", exc)
        except OSError as exc:  # vanished or changed between the checks
            log.error("%s: cannot read (%s)", printable(path), exc.strerror or exc)
        except (ArithmeticError, LookupError, ValueError) as exc:  # one odd file must not stop
            # a watched folder, nor loop it at every restart (a model failure still does)
            log.error("%s: cannot be read (%s: %s)", printable(path), type(exc).__name__,
                      printable(exc))
        runner.stats.failed += 1
        return False

    if Path(source).is_dir():
        once = bool(opts.get("once"))
        record = None
        if not once:
            try:
                record = ReadRecord(record_path(source, option("watch_state")), source)
            except NoStateDir as exc:
                log.warning("%s: %s; its files are not remembered across restarts (give "
                            "--watch-state DIR)", printable(source), exc)
        watcher = FolderWatcher(source, once=once, settle_s=float(option("settle")), stop=stop,
                                record=record)
        try:
            for path in watcher:
                if one_file(path, watcher.quiet_until(path)):
                    watcher.reported(path, runner.last_event_end_s)
                else:
                    watcher.failed(path)  # read again once it changes (a paused copy)
                if stop.is_set():
                    break
        finally:
            watcher.close()
        return 0
    return 0 if one_file(source) or stop.is_set() else 1


def serve_all(specs: list[SourceSpec], make_runner: Callable[[SourceSpec], Any],
              opts: dict[str, Any], stop: threading.Event) -> tuple[int, list[Any]]:
    """Serve every source (one thread each when several); the worst exit code and the
    runners. A source lost for good stops the others (the process then exits non-zero)."""
    runners = [make_runner(spec) for spec in specs]
    if len(specs) == 1:
        return serve(specs[0], runners[0], opts, stop), runners
    codes: dict[int, int] = {}

    def work(i: int) -> None:
        try:
            codes[i] = serve(specs[i], runners[i], opts, stop)
        except Exception as exc:  # one source's bug must not silently kill the others
            log.error("%s: source failed (%s: %s)", specs[i].name, type(exc).__name__,
                      printable(exc))
            codes[i] = 2
        if codes[i] == EXIT_SOURCE_LOST:
            stop.set()

    threads = [threading.Thread(target=work, args=(i,), name=f"source {spec.name}",
                                daemon=True) for i, spec in enumerate(specs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)
    return max(codes.values(), default=0), runners
