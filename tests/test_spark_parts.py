"""The Spark job's parts that need no JVM: master validation, the executor's per-file scoring
against the daemon's own run, and the exactly-once event sinks. (Real Spark: test_spark_job.)"""

from __future__ import annotations

import json
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.daemon import Runner
from edge_runtime.detector import Detector
from edge_runtime.events import EventConfig
from edge_runtime.manifest import ManifestError, load_manifest
from edge_runtime.sinks import JsonlSink
from edge_runtime.sources import file_stream
from edge_runtime.spark_job import (
    SparkSetupError,
    audio_glob,
    check_master,
    input_uri,
    last_error_line,
    stage_model,
)
from edge_runtime.spark_score import (
    JobSpec,
    detector_for,
    display_source,
    result_rows,
    score_file,
)
from edge_runtime.spark_sink import AtomicEvents, BatchCommitSink, write_events
from tests.runtime_model import SR, hiss, tone


def test_master_is_validated_and_bounded(monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    assert check_master("local[2]", cpus=2).url == "local[2]"
    assert check_master("local", cpus=2).slots == 1
    assert check_master("local[*]", cpus=2).url == "local[2]"
    assert check_master("local[2,3]", cpus=4).url == "local[2,3]"
    assert not check_master("spark://head:7077", cpus=2).local
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(SparkSetupError, match="set HADOOP_CONF_DIR"):  # one line, no JVM
        check_master("yarn")
    monkeypatch.setenv("HADOOP_CONF_DIR", str(tmp_path))
    assert check_master("yarn").url == "yarn"
    assert check_master("k8s://https://10.0.0.1:6443").url.startswith("k8s://")
    for bad, why in [("local[3]", "1 ≤ N ≤ 2"), ("local[0]", "1 ≤ N ≤ 2"),
                     ("local[x]", "expected local"), ("mesos://h:5050", "expected local"),
                     ("spark://nohost", "expected local"), ("", "expected local")]:
        with pytest.raises(SparkSetupError, match=re.escape(why)):
            check_master(bad, cpus=2)


def test_input_and_glob(tmp_path: Path) -> None:
    assert input_uri("s3a://bucket/rec") == "s3a://bucket/rec"
    assert input_uri(str(tmp_path)) == str(tmp_path.resolve())
    with pytest.raises(SparkSetupError, match="no such directory"):
        input_uri(str(tmp_path / "missing"))
    glob = audio_glob()
    assert glob.startswith("*.{") and "flac" in glob and "WAV" in glob and "tmp" not in glob
    assert display_source("file:/data/a%20b.wav") == "/data/a b.wav"
    assert display_source("hdfs://nn/x.wav") == "hdfs://nn/x.wav"


def test_staged_model_holds_only_the_verified_files(tiny_model: Path, tmp_path: Path) -> None:
    (tiny_model / "notes.txt").write_text("not shipped")
    staged, model_id, manifest = stage_model(tiny_model, tmp_path)
    assert model_id == load_manifest(tiny_model).model_id() == load_manifest(staged).model_id()
    assert sorted(p.name for p in staged.iterdir()) == sorted(
        [e.path for e in manifest.files.values()] + ["manifest.json"])
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in tiny_model.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "pooling.onnx").read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes
    (bad / "pooling.onnx").write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 mismatch"):
        stage_model(bad, tmp_path / "again")


def test_executor_scoring_equals_the_daemon(tiny_model: Path, tmp_path: Path) -> None:
    """Bytes scored by the executor code == what the daemon's JsonlSink writes for the file
    (every line whole: start and end records, ids, wall-clock times from the file's mtime), and
    bad bytes give one line naming the file."""
    audio = np.concatenate([hiss(3.0), tone(4.0), hiss(12.0), tone(2.5), hiss(2.0)])
    path = tmp_path / "rec.wav"
    sf.write(path, audio, SR)
    os.utime(path, (1_700_000_000.25, 1_700_000_000.25))  # whole ms, as Spark reports times
    det = Detector(tiny_model, provider="cpu", threads=1)
    daemon_out = tmp_path / "daemon.jsonl"
    Runner(det, EventConfig(threshold=det.threshold), [JsonlSink(daemon_out)],
           stop=threading.Event()).run_stream(file_stream(path, SR))
    expected = [json.loads(line) for line in daemon_out.read_text().splitlines()]
    assert [r["state"] for r in expected] == ["start", "end", "start", "end"]

    spec = JobSpec("tiny", det.model_id, model_path=str(tiny_model))
    mtime = datetime.fromtimestamp(1_700_000_000.25, UTC)
    got = score_file(spec, path.as_uri(), path.read_bytes(), mtime)
    assert got.ok and got.messages == []
    assert got.records == expected
    assert detector_for(spec) is detector_for(spec)  # opened once per process
    rows = result_rows(got)
    assert [(r["kind"], r["seq"]) for r in rows] == [("file", 0)] + [("event", i)
                                                                     for i in range(1, 5)]
    assert rows[0]["events"] == 2
    assert json.loads(rows[2]["record"])["offset_end_s"] == rows[2]["offset_end_s"]

    broken = score_file(spec, "file:/landing/broken.wav", b"RIFF\x00\x00garbage", None)
    assert not broken.ok and broken.records == []
    assert len(broken.messages) == 1 and broken.messages[0].startswith("/landing/broken.wav: ")

    wrong = JobSpec("tiny", "0" * 64, model_path=str(tiny_model))
    with pytest.raises(ManifestError, match="not the driver's"):
        score_file(wrong, path.as_uri(), path.read_bytes(), mtime)


def test_last_error_line_picks_the_worker_exception() -> None:
    text = ("An exception was thrown from the Python worker:\nTraceback (most recent call "
            "last):\n  File \"x.py\", line 1\nedge_runtime.manifest.ManifestError: /m: sha256 "
            "mismatch\n\tat org.apache.spark.Foo")
    assert last_error_line(RuntimeError(text)) == \
        "edge_runtime.manifest.ManifestError: /m: sha256 mismatch"
    java = ("An error occurred while calling o50.load.\n: org.apache.hadoop.fs.Unsupported"
            "FileSystemException: No FileSystem for scheme \"foo\"\n\tat org.apache.X(X.java:1)")
    assert last_error_line(RuntimeError(java)).endswith('No FileSystem for scheme "foo"')
    assert last_error_line(RuntimeError("[PATH_NOT_FOUND] no /x\nmore")) == \
        "[PATH_NOT_FOUND] no /x"


RECORDS = [{"event": "danger", "offset_start_s": float(i), "offset_end_s": i + 1.5,
            "source": f"/x/{i}.wav", "tags": [{"name": "Dog", "probability": 0.5}]}
           for i in range(5)]


def test_atomic_events_never_leave_a_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "ev.jsonl"
    out.write_text("previous run\n")
    partial = AtomicEvents(out)
    partial.add(RECORDS[0])
    partial.abort()
    assert out.read_text() == "previous run\n"
    assert write_events(out, RECORDS) == 5
    assert [json.loads(x) for x in out.read_text().splitlines()] == RECORDS
    assert [p.name for p in tmp_path.iterdir()] == ["ev.jsonl"]


def test_jsonl_batches_are_written_once_even_when_replayed(tmp_path: Path) -> None:
    out, ckpt = tmp_path / "ev.jsonl", tmp_path / "ckpt"
    sink = BatchCommitSink(out, ckpt)
    assert sink.write(0, RECORDS[:2]) and sink.write(1, [])
    assert not sink.write(1, RECORDS[2:3])  # replay of a committed batch: skipped
    # A crash after appending batch 2's lines but before committing it: lines on disk, state not.
    with open(out, "a") as handle:
        handle.write(json.dumps(RECORDS[2]) + "\n" + '{"half a li')
    again = BatchCommitSink(out, ckpt)  # restart
    assert again.last_batch() == 1
    assert again.write(2, RECORDS[2:4])  # Spark replays batch 2 (its records, maybe more)
    assert again.write(3, RECORDS[4:])
    assert [json.loads(x) for x in out.read_text().splitlines()] == RECORDS


def test_parquet_outputs(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "ev.parquet"
    write_events(out, RECORDS)
    table = pq.read_table(out)
    assert table.num_rows == 5 and table.column("tags").to_pylist()[0][0]["name"] == "Dog"
    assert table.column("offset_start_s").to_pylist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    stream = tmp_path / "stream.parquet"
    sink = BatchCommitSink(stream, tmp_path / "ckpt")
    assert sink.write(0, RECORDS[:3]) and sink.write(1, []) and sink.write(2, RECORDS[3:])
    assert not sink.write(2, RECORDS[3:])
    assert sorted(p.name for p in stream.iterdir()) == ["batch-0000000000.parquet",
                                                        "batch-0000000002.parquet"]
    assert pq.read_table(stream).num_rows == 5
