"""``edge-detect --spark MASTER``: the daemon's scan of a directory, run by Apache Spark.

Driver side only (the executors run :mod:`edge_runtime.spark_score`). Spark lists and reads the
files (``binaryFile``: local dirs, HDFS, S3 with the usual connectors); the model dir is verified
here, then shipped with the job (``SparkContext.addFile``) — no shared filesystem is assumed.

* ``--once``: one batch job; the events come back as a DataFrame and are written atomically
  (JSON lines, or Parquet for ``--events *.parquet``): the daemon's lines, files in order.
* otherwise: a Structured Streaming query over a landing folder; each micro-batch's events are
  written once (:class:`~edge_runtime.spark_sink.BatchCommitSink`), its progress checkpointed,
  so a restart neither loses nor repeats events.

pyspark is imported only here, and only when ``--spark`` is given (``spark`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from edge_runtime.manifest import MANIFEST_NAME, Manifest, load_manifest, verify_file
from edge_runtime.sources import AUDIO_SUFFIXES
from edge_runtime.spark_score import RESULT_SCHEMA, JobSpec, score_batches
from edge_runtime.spark_sink import AtomicEvents, BatchCommitSink

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("edge-detect")

DRIVER_MEMORY = "1g"
ARROW_FILES_PER_BATCH = 2  # files per Arrow batch in a Python worker (each row holds a file)
MAX_PARTITION_BYTES = "64m"  # files per task: small enough that 2 cores stay busy on ~80 clips
STREAM_FILES_PER_TRIGGER = 32  # a backlog is worked off in bounded micro-batches
STREAM_TRIGGER_S = 2.0  # how often the landing folder is listed
PROGRESS_EVERY_S = 15.0
BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
LOG4J = Path(__file__).parent / "data" / "spark-log4j2.properties"

_LOCAL = re.compile(r"local(?:\[(?P<n>\d+|\*)(?:,\s*(?P<f>\d+))?\])?")
_REMOTE = re.compile(r"(spark://[\w.\-]+:\d+(,[\w.\-]+:\d+)*|yarn|k8s://https?://\S+)")


class Stopped(Exception):
    """SIGINT/SIGTERM arrived before the batch job finished."""


class SparkSetupError(ValueError):
    """Bad --spark options: one line naming the option and the problem."""


@dataclass(frozen=True)
class Master:
    """A validated master URL and how many tasks run at once on this machine (local)."""

    url: str
    local: bool
    slots: int


def check_master(text: str, cpus: int | None = None) -> Master:
    """``local``, ``local[N]`` (1 ≤ N ≤ cpu count), ``local[*]`` (= cpu count),
    ``spark://HOST:PORT``, ``yarn`` or ``k8s://https://HOST:PORT``; else
    :class:`SparkSetupError`."""
    cpus = cpus or os.cpu_count() or 1
    text = text.strip()
    if m := _LOCAL.fullmatch(text):
        n = m["n"] or "1"
        slots = cpus if n == "*" else int(n)
        if not 1 <= slots <= cpus:
            raise SparkSetupError(f"--spark {text}: local[N] needs 1 ≤ N ≤ {cpus} (this "
                                  f"machine's cores); more tasks than cores only adds overhead")
        retries = f",{m['f']}" if m["f"] else ""
        return Master(f"local[{slots}{retries}]", True, slots)
    if _REMOTE.fullmatch(text):
        if text == "yarn" and not (os.environ.get("HADOOP_CONF_DIR")
                                   or os.environ.get("YARN_CONF_DIR")):
            raise SparkSetupError("--spark yarn: set HADOOP_CONF_DIR (or YARN_CONF_DIR) to the "
                                  "folder with the cluster's yarn-site.xml")
        return Master(text, False, 0)
    raise SparkSetupError(f"--spark {text!r}: expected local[N] (N ≤ {cpus}), "
                          "spark://HOST:PORT, yarn or k8s://https://HOST:PORT")


def input_uri(text: str) -> str:
    """A URI Spark can read (``hdfs://``, ``s3a://``, ``file:``…) as is; a local path must exist
    and is made absolute (executors do not share the driver's working directory)."""
    if re.match(r"^[a-zA-Z][\w+.\-]*://", text) or text.startswith("file:"):
        return text
    path = Path(text)
    if not path.exists():
        raise SparkSetupError(f"--input {text}: no such directory")
    return str(path.resolve())


def audio_glob() -> str:
    """``pathGlobFilter`` matching the daemon's audio suffixes, lower or upper case."""
    names = sorted({s.lstrip(".") for s in AUDIO_SUFFIXES})
    return "*.{" + ",".join(names + [n.upper() for n in names]) + "}"


def stage_model(model_dir: str | os.PathLike[str], into: Path) -> tuple[Path, str, Manifest]:
    """Verify every file of the model dir (sha256, as on the device) and copy just the manifest
    and the files it lists into ``into/edge-model-<id>`` — what the job ships to executors."""
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    model_id = manifest.model_id()
    staged = into / f"edge-model-{model_id[:16]}"
    staged.mkdir(parents=True)
    for role, entry in manifest.files.items():
        src = verify_file(model_dir, manifest, role)
        dst = staged / entry.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    shutil.copy2(model_dir / MANIFEST_NAME, staged / MANIFEST_NAME)
    return staged, model_id, manifest


def spark_conf(master: Master) -> dict[str, str]:
    """The job's bounded settings: small driver heap, small Arrow batches, quiet logs."""
    conf = {
        "spark.driver.memory": DRIVER_MEMORY,
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J.as_uri()}",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(ARROW_FILES_PER_BATCH),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.files.maxPartitionBytes": MAX_PARTITION_BYTES,
        "spark.sql.shuffle.partitions": str(max(2, 2 * (master.slots or 2))),
        "spark.sql.streaming.stopTimeout": "60s",
    }
    if master.local:
        conf["spark.ui.enabled"] = "false"
        conf["spark.sql.files.minPartitionNum"] = str(4 * master.slots)
    return conf


def spark_session(master: Master) -> SparkSession:
    """Start (or join, under ``spark-submit``) the Spark session with :func:`spark_conf`.

    Under ``spark-submit`` the driver JVM is already running: its options win and only the
    settings it leaves unset are added.
    """
    try:
        from pyspark import SparkConf, SparkContext
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkSetupError("--spark needs pyspark: pip install 'edge-detect[spark]'") from None
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        raise SparkSetupError("--spark needs Java 17 (no 'java' on PATH and no JAVA_HOME): "
                              "apt-get install openjdk-17-jre-headless")
    logging.getLogger("py4j").setLevel(logging.WARNING)  # per-call connection chatter
    conf = spark_conf(master)
    if master.local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers: this interpreter
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if os.environ.get("PYSPARK_GATEWAY_PORT"):  # launched by spark-submit
        SparkContext._ensure_initialized()
        have = {k for k, _ in SparkConf().getAll()}
        conf = {k: v for k, v in conf.items()
                if k not in have and not k.startswith("spark.driver.")}
    builder = SparkSession.builder.master(master.url).appName("edge-detect")
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def scored_frame(spark: SparkSession, uri: str, spec: JobSpec, streaming: bool = False
                 ) -> DataFrame:
    """Audio files under ``uri`` (recursive, audio suffixes only) → one row per file and per
    event (:data:`~edge_runtime.spark_score.RESULT_SCHEMA`), scored in ``mapInPandas``."""
    reader = spark.readStream if streaming else spark.read
    reader = (reader.format("binaryFile").option("pathGlobFilter", audio_glob())
              .option("recursiveFileLookup", "true"))
    if streaming:  # a stream source needs binaryFile's (fixed) schema spelled out
        reader = (reader.schema(BINARY_FILE_SCHEMA)
                  .option("maxFilesPerTrigger", STREAM_FILES_PER_TRIGGER))
    files = reader.load(uri).select("path", "modificationTime", "content")
    return files.mapInPandas(partial(score_batches, spec), RESULT_SCHEMA)


def events_frame(scored: DataFrame) -> DataFrame:
    """The event records of a :func:`scored_frame` (each event's start and end, in order):
    source, order in the file, offsets and the daemon's JSON line."""
    return (scored.where(scored.kind == "event")
            .select("source", "seq", "offset_start_s", "offset_end_s", "record"))


@dataclass
class Totals:
    """What the driver reports: files, failures, events, audio and compute seconds."""

    files: int = 0
    failed: int = 0
    events: int = 0
    audio_s: float = 0.0
    compute_s: float = 0.0

    def add(self, other: Totals) -> None:
        """Count ``other`` (one micro-batch's totals) in."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def line(self) -> str:
        return (f"{self.files} file(s), {self.failed} failed, {self.events} event(s); "
                f"{self.audio_s:.1f} s of audio, {self.compute_s:.1f} s of executor compute")


def consume(rows: Iterable[Any], totals: Totals) -> Iterator[dict[str, Any]]:
    """Report each file row (its errors and warnings as one line each) and yield the event
    records, in the order given."""
    for row in rows:
        if row.kind == "file":
            totals.files += 1
            totals.failed += 0 if row.ok else 1
            totals.audio_s += row.audio_s or 0.0
            totals.compute_s += row.compute_s or 0.0
            for line in (row.message or "").splitlines():
                (log.warning if row.ok else log.error)("%s", line)
            continue
        record = json.loads(row.record)
        if record.get("state") == "end":
            totals.events += 1
            what = f"DANGER ({record['class']})" if record.get("class") else "DANGER"
            log.warning("%s %s +%.1fs, %.1f s, peak %.2f", what, record["source"],
                        record.get("offset_start_s") or 0.0, record["duration_s"],
                        record["peak_probability"])
        yield record


class Progress:
    """One line every ``every_s`` while tasks are running (Spark's own progress bar is off)."""

    def __init__(self, spark: SparkSession, every_s: float = PROGRESS_EVERY_S) -> None:
        self.tracker = spark.sparkContext.statusTracker()
        self.every_s = every_s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)

    def _run(self) -> None:
        last = None
        while not self.done.wait(self.every_s):
            stages = [self.tracker.getStageInfo(s) for s in self.tracker.getActiveStageIds()]
            done = sum(s.numCompletedTasks for s in stages if s)
            total = sum(s.numTasks for s in stages if s)
            if total and (done, total) != last:
                log.info("spark: %d/%d task(s) of the running stage(s) done", done, total)
                last = (done, total)

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()


def run_batch(spark: SparkSession, uri: str, spec: JobSpec, events: str | None,
              stop: threading.Event) -> Totals:
    """Score everything under ``uri`` once; write the records atomically (files sorted, each
    file's lines in the daemon's order). Cancelled (SIGINT/SIGTERM) → Spark jobs cancelled, no
    events file written."""
    from pyspark import StorageLevel

    scored = scored_frame(spark, uri, spec).persist(StorageLevel.MEMORY_AND_DISK)
    finished = threading.Event()

    def cancel_on_stop() -> None:
        # Cancelling is repeated: a job submitted after the signal (planning takes seconds)
        # must not escape.
        stop.wait()
        log.info("cancelling the Spark job: no events file is written")
        while not finished.is_set():
            spark.sparkContext.cancelAllJobs()
            finished.wait(0.5)

    threading.Thread(target=cancel_on_stop, name="spark-cancel", daemon=True).start()
    totals = Totals()
    try:
        with Progress(spark):
            scored.count()  # all files scored in parallel once; the ordered read uses the cache
            rows = scored.orderBy("source", "seq").toLocalIterator()
            records = consume(rows, totals)
            out = AtomicEvents(events) if events else None
            try:
                for rec in records:
                    if out is not None:
                        out.add(rec)
                if stop.is_set():
                    raise Stopped
                if out is not None:
                    out.commit()
            except BaseException:
                if out is not None:
                    out.abort()
                raise
    finally:
        finished.set()
        scored.unpersist()
    return totals


def run_streaming(spark: SparkSession, uri: str, spec: JobSpec, events: str, checkpoint: str,
                  stop: threading.Event) -> Totals:
    """Structured Streaming over a landing folder until ``stop``; returns the totals."""
    sink = BatchCommitSink(events, checkpoint)
    totals = Totals()
    spark.conf.set("spark.sql.adaptive.enabled", "false")  # not used by streaming queries

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        started = time.perf_counter()
        seen = Totals()
        rows = sorted(batch.collect(), key=lambda r: (r.source, r.seq))
        records = list(consume(rows, seen))
        written = sink.write(batch_id, records)
        totals.add(seen)
        if seen.files:
            log.info("batch %d: %s; %.1f s wall%s", batch_id, seen.line(),
                     time.perf_counter() - started, "" if written else " (already written)")

    query = (scored_frame(spark, uri, spec, streaming=True).writeStream
             .foreachBatch(each_batch).option("checkpointLocation", checkpoint)
             .trigger(processingTime=f"{STREAM_TRIGGER_S} seconds").start())
    log.info("watching %s (checkpoint %s); events → %s", uri, checkpoint, events)
    try:
        while query.isActive and not stop.is_set():
            query.awaitTermination(0.5)
    finally:
        if query.isActive:
            query.stop()
    return totals


def settle(spark: SparkSession, timeout_s: float = 15.0) -> None:
    """Before stopping: let cancelled tasks wind down (stopping under them only adds noise)."""
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + timeout_s
    while tracker.getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)


def is_spark_error(exc: BaseException) -> bool:
    """An error raised by Spark/py4j (a failed job, a worker's exception)."""
    return type(exc).__module__.split(".")[0] in ("pyspark", "py4j")


def last_error_line(exc: BaseException) -> str:
    """The line of a Spark error that says what went wrong: its text carries the executor's
    Python traceback and/or a Java stack; the innermost Python ``SomeError: message`` wins, else
    the innermost Java one, else the first line."""
    lines = [re.sub(r"^(: |Caused by: )", "", line.strip()) for line in str(exc).splitlines()]
    found = [line for line in lines if re.match(r"^[\w.$]+(Error|Exception): ", line)]
    python = [line for line in found if not line.startswith(("org.", "java.", "scala.",
                                                              "py4j."))]
    best = python or found or [line for line in lines if line] or [type(exc).__name__]
    return (best[-1] if python or found else best[0])[:500]


def default_checkpoint(events: str) -> str:
    """``<events folder>/.<events name>.checkpoint``."""
    path = Path(events)
    return str(path.parent / f".{path.name}.checkpoint")


def run_spark(opts: dict[str, Any], stop: threading.Event) -> int:
    """The CLI's ``--spark`` branch; returns the exit code."""
    master = check_master(str(opts["spark"]))
    inputs = opts["input"]
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if len(inputs) != 1 or opts.get("sources"):
        raise SparkSetupError("--spark reads one --input (a DIR or URI), no [sources] tables")
    source = str(inputs[0])
    if source in ("mic", "-"):
        raise SparkSetupError(f"--input {source}: --spark reads files (a DIR or a URI)")
    live = [f"--{name.replace('_', '-')}" for name in ("save_clips", "mqtt", "notify", "monitor")
            if opts.get(name)]
    if live:
        raise SparkSetupError(f"{', '.join(live)}: not supported with --spark (it writes the "
                              "events to --events; feed those to other tools)")
    uri = input_uri(source)
    events = opts.get("events")
    once = bool(opts.get("once"))
    checkpoint = opts.get("spark_checkpoint")
    if not once and not events:
        raise SparkSetupError("--spark without --once (streaming) needs --events FILE")
    if once and checkpoint:
        raise SparkSetupError("--spark-checkpoint is for streaming (without --once)")
    if not once:
        checkpoint = str(Path(checkpoint or default_checkpoint(events)).resolve())
    if master.local and urlparse(uri).scheme not in ("", "file"):
        log.info("local master reading %s: needs the Hadoop connector for %s on the classpath",
                 uri, urlparse(uri).scheme)

    with tempfile.TemporaryDirectory(prefix="edge-spark-model-") as tmp:
        staged, model_id, _ = stage_model(opts["model"], Path(tmp))
        window_only = bool(opts.get("window_only"))
        spec = JobSpec(model_name=staged.name, model_id=model_id,
                       hysteresis=float(opts["hysteresis"]),
                       min_duration_s=float(opts["min_duration"]),
                       cooldown_s=float(opts["cooldown"]),
                       update_every_s=float(opts.get("update_every") or 0.0),
                       provider=str(opts.get("provider") or "auto"),
                       threads=int(opts.get("threads") or 1),
                       threshold=opts.get("threshold"),
                       chunk_decisions=False if window_only else None)
        started = time.perf_counter()
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            spark = spark_session(master)
        except Exception as exc:
            if not is_spark_error(exc):
                raise
            log.error("cannot start Spark on %s: %s", master.url, last_error_line(exc))
            return 1
        if callable(sigterm) and threading.current_thread() is threading.main_thread():
            # pyspark took SIGINT over; give it back to the CLI's handler
            signal.signal(signal.SIGINT, sigterm)
        try:
            spark.sparkContext.addFile(str(staged), recursive=True)
            log.info("spark %s (%s slot(s)); model %s shipped; threshold %s; %.1f s to start",
                     master.url, master.slots or "cluster", model_id[:12],
                     "the model's" if spec.threshold is None else f"{spec.threshold:.2f}",
                     time.perf_counter() - started)
            if once:
                totals = run_batch(spark, uri, spec, events, stop)
            else:
                totals = run_streaming(spark, uri, spec, events, checkpoint, stop)
        except Exception as exc:
            if stop.is_set():
                log.warning("stopped before the end; no events written for unfinished work")
                return 130
            if not is_spark_error(exc):
                raise
            log.error("spark job failed: %s", last_error_line(exc))
            return 1
        finally:
            if stop.is_set():  # py4j logs every callback cut by the shutdown as a traceback
                logging.getLogger("py4j").setLevel(logging.CRITICAL)
            settle(spark)
            spark.stop()
    log.info("done: %s; %.1f s wall%s", totals.line(), time.perf_counter() - started,
             f"; events in {events}" if events else "")
    return 0
