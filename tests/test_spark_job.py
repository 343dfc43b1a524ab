"""``edge-detect --spark`` against a real local Spark (pyspark + Java 17), with the real mn04 model.

* batch: on 80 ESC-10 clips, ``--spark local[2]`` writes exactly the events the single-process
  ``--once`` writes;
* bad input inside a Spark job: one line naming the file, the job goes on; Parquet output;
* streaming: files landing while the query runs produce their events once, across a SIGKILL and
  restart, and across a forced replay of the last micro-batch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spark_ready() -> None:
    pytest.importorskip("pyspark", reason="the 'spark' extra is not installed")
    pytest.importorskip("pyarrow", reason="the 'spark' extra is not installed")
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("no Java (apt-get install openjdk-17-jre-headless; .ci/setup does)")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def env() -> dict[str, str]:
    """The checkout under test first on the path (Spark's Python workers inherit it)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout,
                          env=env(), cwd=REPO)


def clips(esc10_dir: Path, n: int, step: int) -> list[Path]:
    """Every ``step``-th ESC-10 clip by name: all ten categories, danger and safe."""
    return sorted((esc10_dir / "audio").glob("*.flac"))[::step][:n]


def copy_into(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy2(p, folder / p.name)
    return folder


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def key(rec: dict) -> tuple:
    """(file, record state, start offset, end offset, class) — wall-clock fields aside."""
    return (Path(rec["source"]).name, rec["state"], rec["offset_start_s"], rec["offset_end_s"],
            rec.get("class"))


WALL_CLOCK = ("start", "end", "id")  # from the file's mtime: Spark reports it to the ms
PROBABILITIES = ("peak_probability", "mean_probability")


def test_spark_batch_writes_exactly_the_daemons_events(spark_ready: None, esc10_dir: Path,
                                                       mn04_class_model_dir: Path,
                                                       tmp_path: Path) -> None:
    folder = copy_into(clips(esc10_dir, 80, 5), tmp_path / "clips")
    single, spark = tmp_path / "single.jsonl", tmp_path / "spark.jsonl"
    ref = run("--model", str(mn04_class_model_dir), "--input", str(folder), "--once", "-q",
              "--events", str(single))
    assert ref.returncode == 0, ref.stderr
    res = run("--model", str(mn04_class_model_dir), "--input", str(folder), "--once",
              "--spark", "local[2]", "--events", str(spark))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "80 file(s), 0 failed" in res.stderr, res.stderr
    want, got = read_jsonl(single), read_jsonl(spark)
    assert len(want) >= 20, "too few events for the comparison to mean anything"
    assert any(r.get("class") for r in want), "the class model's events name their class"
    assert Counter(map(key, got)) == Counter(map(key, want))
    # the same lines in the same order (files sorted, each file's records as the daemon wrote
    # them); every field equal but the wall-clock ones, probabilities to their rounding
    assert len(got) == len(want)
    for rec, ref_rec in zip(got, want, strict=True):
        for field in PROBABILITIES:
            assert abs(rec.pop(field) - ref_rec.pop(field)) <= 2e-4, (rec, ref_rec)
        for field in WALL_CLOCK:
            assert rec.pop(field)[:19] == ref_rec.pop(field)[:19]
        assert rec == ref_rec

    # SIGTERM mid-job: the job is cancelled, exit 130, no events file (not even a partial one)
    cancelled = tmp_path / "cancelled.jsonl"
    proc = subprocess.Popen(cli("--model", str(mn04_class_model_dir), "--input", str(folder),
                                "--once",
                                "--spark", "local[2]", "--events", str(cancelled)),
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=REPO)
    err = ""
    while "shipped" not in err:
        line = proc.stderr.readline()
        assert line, err
        err += line
    proc.send_signal(signal.SIGTERM)
    err += proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "cancelling the Spark job" in err
    assert not cancelled.exists() and not list(tmp_path.glob(".cancelled.jsonl*"))


def test_spark_batch_reports_bad_files_and_writes_parquet(spark_ready: None, esc10_dir: Path,
                                                          mn04_class_model_dir: Path,
                                                          tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    folder = copy_into(clips(esc10_dir, 2, 40), tmp_path / "in")
    copy_into(clips(esc10_dir, 2, 90), folder / "nested" / "deeper")
    (folder / "broken.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    (folder / "notes.txt").write_text("not audio")
    (folder / ".partial.flac").write_bytes(b"hidden: ignored")
    out = tmp_path / "events.parquet"
    res = run("--model", str(mn04_class_model_dir), "--input", str(folder), "--once",
              "--spark", "local[2]", "--events", str(out))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{folder / 'broken.wav'}: " in errors[0], res.stderr
    assert "5 file(s), 1 failed" in res.stderr
    table = pq.read_table(out).to_pylist()
    expected = []
    for i, sub in enumerate((folder, folder / "nested" / "deeper")):
        ref = tmp_path / f"ref{i}.jsonl"  # --once starts its events file afresh
        assert run("--model", str(mn04_class_model_dir), "--input", str(sub), "--once", "-q",
                   "--events", str(ref)).returncode == 0
        expected += read_jsonl(ref)
    assert sorted(map(key, table)) == sorted(map(key, expected))
    assert any("nested" in r["source"] for r in table)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


class Query:
    """A streaming ``edge-detect --spark`` process, in its own process group."""

    def __init__(self, model: Path, landing: Path, events: Path, log: Path) -> None:
        self.log = log
        with open(log, "a") as handle:
            self.proc = subprocess.Popen(
                cli("--model", str(model), "--input", str(landing), "--spark", "local[2]",
                    "--events", str(events)),
                stdout=handle, stderr=subprocess.STDOUT, env=env(), cwd=REPO,
                start_new_session=True)

    def wait_for(self, what: str, check, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            assert self.proc.poll() is None, f"query exited while waiting for {what}:\n" + \
                self.log.read_text()
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log.read_text()}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def land(paths: list[Path], landing: Path) -> None:
    """Copy under a hidden name, then rename: the query never sees half a file."""
    for p in paths:
        tmp = landing / f".{p.name}.part"
        shutil.copy2(p, tmp)
        os.replace(tmp, landing / p.name)


def test_streaming_each_landed_file_once_across_kill_and_replay(
        spark_ready: None, esc10_dir: Path, mn04_class_model_dir: Path, tmp_path: Path) -> None:
    # dog / crying baby / chainsaw clips; the nine first that the model flags
    candidates = [p for p in sorted((esc10_dir / "audio").glob("*.flac"))
                  if p.stem.rsplit("-", 1)[1] in {"0", "20", "41"}][::5][:20]
    ref_dir = copy_into(candidates, tmp_path / "ref")
    ref = tmp_path / "ref.jsonl"
    assert run("--model", str(mn04_class_model_dir), "--input", str(ref_dir), "--once", "-q",
               "--events", str(ref)).returncode == 0
    flagged = {Path(r["source"]).name for r in read_jsonl(ref)}
    danger = [p for p in candidates if p.name in flagged][:9]
    assert len(danger) == 9, f"only {len(danger)} of {len(candidates)} danger clips flagged"
    expected = Counter(key(r) for r in read_jsonl(ref)
                       if Path(r["source"]).name in {p.name for p in danger})
    per_file: Counter[str] = Counter()
    for k, n in expected.items():
        per_file[k[0]] += n  # records (start and end lines) each file must produce

    landing, events = tmp_path / "landing", tmp_path / "out" / "events.jsonl"
    landing.mkdir()
    log = tmp_path / "query.log"

    def have(names: list[Path]) -> bool:
        got = Counter(Path(r["source"]).name for r in read_jsonl(events))
        return all(got[p.name] >= per_file[p.name] for p in names)

    q = Query(mn04_class_model_dir, landing, events, log)
    q.wait_for("the query to start", lambda: "watching" in log.read_text())
    land(danger[:3], landing)
    q.wait_for("the first files' events", lambda: have(danger[:3]))
    land(danger[3:6], landing)
    time.sleep(1.0)  # likely mid-batch; whatever the moment, nothing may be lost or doubled
    q.kill()

    q = Query(mn04_class_model_dir, landing, events, log)
    q.wait_for("the restarted query", lambda: log.read_text().count("watching") == 2)
    land(danger[6:], landing)
    (landing / "broken.flac").write_bytes(b"fLaC garbage")
    q.wait_for("all events", lambda: have(danger))
    q.wait_for("the broken file's line", lambda: "broken.flac: " in log.read_text())
    assert q.stop() == 0
    assert Counter(map(key, read_jsonl(events))) == expected

    # Force Spark to replay its last batch (as after a crash between our write and its commit)
    commits = sorted((events.parent / ".events.jsonl.checkpoint" / "commits").glob("[0-9]*"),
                     key=lambda p: int(p.name))
    commits[-1].unlink()  # with its Hadoop checksum: a crash would have written neither
    (commits[-1].parent / f".{commits[-1].name}.crc").unlink(missing_ok=True)
    replays = log.read_text().count("(already written)")  # the kill may have caused one
    q = Query(mn04_class_model_dir, landing, events, log)
    q.wait_for("the replayed batch",
               lambda: log.read_text().count("(already written)") > replays)
    assert q.stop() == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert Counter(map(key, read_jsonl(events))) == expected
