"""Where the Spark job's events go: JSON lines or Parquet, never half-written, never twice.

* :class:`AtomicEvents` — a batch run's whole output, written to a temporary name and renamed.
* :class:`BatchCommitSink` — a streaming query's micro-batches, each written once even when Spark
  replays a batch after a crash (idempotent by batch id, state kept in the checkpoint dir).

pyarrow is imported only for Parquet (it comes with the ``spark`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_runtime.atomic import current_umask, fsync_dir, write_json

log = logging.getLogger("edge-detect")

PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_ROWS = 10_000  # records buffered per Parquet row group


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Parquet by suffix (``.parquet``/``.pq``); anything else is JSON lines."""
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def parquet_schema() -> Any:
    """The JSON line of an event record (``lifecycle.EventRecord.to_dict``) as a fixed Arrow
    schema (so every file of a dataset has the same one)."""
    import pyarrow as pa

    tag = pa.struct([("name", pa.string()), ("probability", pa.float64())])
    return pa.schema([("event", pa.string()), ("id", pa.string()), ("state", pa.string()),
                      ("class", pa.string()), ("start", pa.string()), ("end", pa.string()),
                      ("duration_s", pa.float64()), ("offset_start_s", pa.float64()),
                      ("offset_end_s", pa.float64()), ("peak_probability", pa.float64()),
                      ("mean_probability", pa.float64()), ("windows", pa.int64()),
                      ("source", pa.string()), ("model_sha256", pa.string()),
                      ("tags", pa.list_(tag)), ("clip", pa.string())])


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


class AtomicEvents:
    """Collect records into a temporary file beside ``path``; :meth:`commit` renames it.

    A run that fails or is cancelled leaves the previous file (if any) untouched.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.parquet = is_parquet(self.path)
        self.tmp = _temp_beside(self.path)
        self.count = 0
        self._buffer: list[dict[str, Any]] = []
        self._writer: Any = None
        self._handle = None if self.parquet else open(  # noqa: SIM115 (closed in commit/abort)
            self.tmp, "w", encoding="utf-8")

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        if self._handle is not None:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        self._buffer.append(record)
        if len(self._buffer) >= PARQUET_ROWS:
            self._flush_parquet()

    def _flush_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = parquet_schema()
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.tmp), schema)
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=schema))
        self._buffer.clear()

    def commit(self) -> Path:
        """Flush, fsync and rename into place; returns the final path."""
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        else:
            self._flush_parquet()
            self._writer.close()
        os.chmod(self.tmp, 0o666 & ~current_umask())
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file."""
        if self._handle is not None:
            self._handle.close()
        if self._writer is not None:
            self._writer.close()
        self.tmp.unlink(missing_ok=True)


def write_events(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write all ``records`` atomically (JSONL or Parquet by suffix); returns how many."""
    out = AtomicEvents(path)
    try:
        for rec in records:
            out.add(rec)
        out.commit()
    except BaseException:
        out.abort()
        raise
    return out.count


class BatchCommitSink:
    """Exactly-once output for ``foreachBatch``: a batch id is written at most once.

    JSON lines: appended to one file. The state file (in the checkpoint dir) holds the last
    committed batch id and the file's size after it. A batch whose id is not newer is skipped
    (Spark replays the last batch after a crash); before appending, the file is cut back to the
    committed size, so lines of a batch that crashed half-way are replaced, not duplicated.

    Parquet: ``path`` is a dataset folder with one ``batch-<id>.parquet`` per batch, each renamed
    into place (rewriting a replayed batch replaces the same file).
    """

    STATE = "edge-detect-sink.json"

    def __init__(self, path: str | os.PathLike[str], checkpoint: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.parquet = is_parquet(self.path)
        self.state_path = Path(checkpoint) / self.STATE
        if self.parquet:
            self.path.mkdir(parents=True, exist_ok=True)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"batch_id": -1, "bytes": None}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.state_path}: unreadable sink state ({exc}); "
                             "delete the checkpoint dir to start over") from None
        if state.get("events") != str(self.path):  # same checkpoint, another events file
            return {"batch_id": int(state.get("batch_id", -1)), "bytes": None}
        return state

    def last_batch(self) -> int:
        return int(self._state()["batch_id"])

    def write(self, batch_id: int, records: list[dict[str, Any]]) -> bool:
        """Write one batch's records; False when that batch was already committed."""
        state = self._state()
        if batch_id <= int(state["batch_id"]):
            log.info("batch %d was already written (replayed after a restart); skipped",
                     batch_id)
            return False
        size = self._write_parquet(batch_id, records) if self.parquet else \
            self._append_jsonl(records, state["bytes"])
        write_json(self.state_path, {"events": str(self.path), "batch_id": batch_id,
                                     "bytes": size})
        return True

    def _append_jsonl(self, records: list[dict[str, Any]], committed: int | None) -> int:
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        with open(self.path, "ab") as handle:
            size = handle.seek(0, os.SEEK_END)
            if committed is not None and size > committed:
                log.warning("%s: dropping %d byte(s) of an uncommitted batch before rewriting "
                            "it", self.path, size - committed)
                handle.truncate(committed)
            elif committed is not None and size < committed:
                log.warning("%s: shorter than committed (%d < %d bytes): truncated or "
                            "rotated outside edge-detect; appending", self.path, size, committed)
            if data:
                handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            return os.fstat(handle.fileno()).st_size

    def _write_parquet(self, batch_id: int, records: list[dict[str, Any]]) -> None:
        """One file per batch with events (the id in its name makes a rewrite idempotent)."""
        if not records:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        final = self.path / f"batch-{batch_id:010d}.parquet"
        tmp = _temp_beside(final)
        try:
            pq.write_table(pa.Table.from_pylist(records, schema=parquet_schema()), str(tmp))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return None
