"""Executor side of the Spark job: audio bytes in, the daemon's own event records out.

Runs inside ``mapInPandas`` on Spark's Python workers. Every file goes through exactly the
single-process path — :func:`edge_runtime.sources.file_stream` → :class:`Detector` stream →
:class:`EventTracker` (via :class:`edge_runtime.daemon.Runner`) → the lifecycle records
(``start`` and ``end``, as ``JsonlSink`` writes them) — so the records equal the daemon's.
Each worker process opens (and sha256-verifies) the model dir once: detectors are cached per
process, keyed by the model's local path and id.

No pyspark import here; pandas is imported only when a batch arrives.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from edge_runtime.audio import AudioError
from edge_runtime.events import EventConfig
from edge_runtime.manifest import ManifestError
from edge_runtime.sinks import MemorySink
from edge_runtime.sources import file_stream, is_candidate

if TYPE_CHECKING:
    import pandas as pd

    from edge_runtime.detector import Detector

log = logging.getLogger("edge-detect")

# One row per file (kind "file": its outcome) and one per record (kind "event": the JSON line
# the daemon's JsonlSink writes, start and end of each event; ``seq`` is its order in the file).
RESULT_SCHEMA = ("kind string, source string, seq int, ok boolean, message string, "
                 "audio_s double, compute_s double, events int, offset_start_s double, "
                 "offset_end_s double, record string")
COLUMNS = [part.split()[0] for part in RESULT_SCHEMA.split(", ")]


@dataclass(frozen=True)
class JobSpec:
    """Everything an executor needs, pickled into the task: where the model is and the rules.

    ``model_name``: the name the model dir was shipped under (``SparkContext.addFile``); when
    ``model_path`` is set (tests, a shared filesystem) it is used as is instead.
    """

    model_name: str
    model_id: str
    hysteresis: float = 0.1
    min_duration_s: float = 1.0
    cooldown_s: float = 2.0
    update_every_s: float = 0.0
    provider: str = "cpu"
    threads: int = 1
    threshold: float | None = None
    chunk_decisions: bool | None = None
    model_path: str | None = None

    def rules(self, detector: Detector) -> EventConfig:
        """The event rules as the CLI builds them (threshold: the Detector's)."""
        return EventConfig(threshold=detector.threshold, hysteresis=self.hysteresis,
                           min_duration_s=self.min_duration_s, cooldown_s=self.cooldown_s,
                           update_every_s=self.update_every_s)


_DETECTORS: dict[tuple[Any, ...], Detector] = {}
_LOCK = threading.Lock()


def model_dir(spec: JobSpec) -> str:
    """Local path of the shipped model dir on this executor."""
    if spec.model_path:
        return spec.model_path
    from pyspark import SparkFiles  # only ever called inside a Spark worker

    return SparkFiles.get(spec.model_name)


def detector_for(spec: JobSpec) -> Detector:
    """This process's Detector for ``spec`` (opened and sha256-verified on first use)."""
    from edge_runtime.detector import Detector

    path = model_dir(spec)
    key = (path, spec.model_id, spec.provider, spec.threads, spec.threshold,
           spec.chunk_decisions)
    with _LOCK:
        det = _DETECTORS.get(key)
        if det is None:
            det = Detector(path, provider=spec.provider, threads=spec.threads,
                           threshold=spec.threshold, chunk_decisions=spec.chunk_decisions)
            if det.model_id != spec.model_id:
                raise ManifestError(f"{path}: model {det.model_id[:12]} on this executor is not "
                                    f"the driver's {spec.model_id[:12]}")
            _DETECTORS[key] = det
        return det


def display_source(uri: str) -> str:
    """``file:/a/b.wav`` → ``/a/b.wav`` (what the daemon writes); other URIs unchanged."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return uri


class _Capture(logging.Handler):
    """Collects the runtime's warnings and errors for one file, to be reported by the driver."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class FileResult:
    """Outcome of one file: its event records and what went wrong, if anything."""

    source: str
    ok: bool
    records: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    audio_s: float = 0.0
    compute_s: float = 0.0


def score_file(spec: JobSpec, uri: str, content: bytes, modified: datetime | None) -> FileResult:
    """Run one file's bytes through the daemon's path; never raises for bad audio."""
    from edge_runtime.daemon import Runner

    source = display_source(uri)
    name = Path(urlparse(uri).path).name or "audio"
    capture = _Capture()
    logger = logging.getLogger("edge-detect")
    logger.addHandler(capture)
    propagate, logger.propagate = logger.propagate, False
    try:
        detector = detector_for(spec)
        collect = MemorySink()  # what JsonlSink would write: each event's start and end
        runner = Runner(detector, spec.rules(detector), [collect])
        with tempfile.TemporaryDirectory(prefix="edge-spark-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(content)
            if modified is not None:  # the daemon dates a file by its mtime
                stamp = modified.timestamp()
                os.utime(path, (stamp, stamp))
            try:
                stream = file_stream(path, detector.sample_rate)
                stream.source = source
                ok = runner.run_stream(stream)
            except AudioError as exc:
                log.error("%s", exc)
                ok = False
        messages = [line.replace(str(path), source) for line in capture.lines]
        return FileResult(source, ok, collect.records, messages, runner.stats.audio_s,
                          runner.stats.compute_s)
    finally:
        logger.removeHandler(capture)
        logger.propagate = propagate


def result_rows(result: FileResult) -> list[dict[str, Any]]:
    """One ``file`` row, then one ``event`` row per record (see :data:`RESULT_SCHEMA`)."""
    ended = sum(1 for rec in result.records if rec.get("state") == "end")
    rows = [{"kind": "file", "source": result.source, "seq": 0, "ok": result.ok,
             "message": "\n".join(result.messages) or None, "audio_s": result.audio_s,
             "compute_s": result.compute_s, "events": ended,
             "offset_start_s": None, "offset_end_s": None, "record": None}]
    for seq, rec in enumerate(result.records, 1):
        rows.append({"kind": "event", "source": result.source, "seq": seq, "ok": True,
                     "message": None, "audio_s": None, "compute_s": None, "events": None,
                     "offset_start_s": rec.get("offset_start_s"),
                     "offset_end_s": rec.get("offset_end_s"),
                     "record": json.dumps(rec, ensure_ascii=False)})
    return rows


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        import pandas as pd

        if pd.isna(value):
            return None
        stamp = pd.Timestamp(value)
        # the job runs with spark.sql.session.timeZone=UTC: naive timestamps are UTC
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        return stamp.to_pydatetime()
    except (TypeError, ValueError):
        return None


def score_batches(spec: JobSpec, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """``mapInPandas`` function over ``binaryFile`` rows (path, modificationTime, content)."""
    import pandas as pd

    for batch in batches:
        rows: list[dict[str, Any]] = []
        for uri, modified, content in zip(batch["path"], batch["modificationTime"],
                                          batch["content"], strict=True):
            if not is_candidate(Path(urlparse(uri).path)):
                continue
            rows += result_rows(score_file(spec, uri, bytes(content), _timestamp(modified)))
        yield pd.DataFrame(rows, columns=COLUMNS)
