"""Daemon operations: stdin PCM with clean SIGTERM shutdown, the directory watcher, TOML config,
systemd unit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.sources import is_candidate, pcm_stream, watch_directory
from tests.helpers import ended_events, wait_until
from tests.runtime_model import SR, hiss, tone


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def test_sigterm_closes_and_writes_the_open_event(tiny_model: Path, tmp_path: Path) -> None:
    """Loud s16le PCM at 48 kHz on stdin; the pipe stays open; SIGTERM → event flushed."""
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen(cli("--model", str(tiny_model), "--input", "-", "--rate", "48000",
                                "--format", "s16le", "--events", str(events)),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    pcm = (np.concatenate([hiss(1.0, sr=48000), tone(7.0, sr=48000)]) * 32767).astype("<i2")
    proc.stdin.write(pcm.tobytes())
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    err = b""
    while time.monotonic() < deadline and b"started" not in err:
        err += proc.stderr.read1(4096)
    assert b"DANGER #1 started" in err, err.decode()
    # still open: its start is on disk already (complete, fsynced), its end not yet
    (start,) = [json.loads(line) for line in events.read_text().splitlines()]
    assert start["state"] == "start" and start["source"] == "stdin"
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    text = (err + rest).decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "SIGTERM" in text
    first, rec = [json.loads(line) for line in events.read_text().splitlines()]
    assert first == start and rec["state"] == "end" and rec["id"] == start["id"]
    assert rec["source"] == "stdin" and "offset_start_s" not in rec and "class" not in rec
    assert rec["start"] == start["start"] and rec["end"] > start["end"]
    assert rec["peak_probability"] > 0.9


def test_audio_piped_faster_than_real_time_is_never_dated_in_the_future(
        tiny_model: Path, tmp_path: Path) -> None:
    """Ten minutes of a recording piped to stdin in a second or two: its events used to be
    stamped open time + offset, up to ten minutes ahead. Now no time is later than the run, an
    event's start and end keep one id, and the times stay in order."""
    from datetime import datetime

    events = tmp_path / "events.jsonl"
    pieces = []
    for _ in range(20):  # 20 events, 30 s apart
        pieces += [hiss(25.0), tone(5.0)]
    pcm = (np.concatenate(pieces) * 32767).astype("<i2").tobytes()
    before = time.time()
    done = subprocess.run(cli("--model", str(tiny_model), "--input", "-", "--rate", str(SR),
                              "--events", str(events)), input=pcm, capture_output=True,
                          timeout=300)
    after = time.time()
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr.decode().count("audio arrives faster than real time") == 1
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    ends = [rec for rec in lines if rec["state"] == "end"]
    assert len(ends) == 20 and after - before < 300
    by_id = {rec["id"]: rec for rec in lines if rec["state"] == "start"}
    assert set(by_id) == {rec["id"] for rec in ends}

    def stamp(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    for rec in ends:
        assert before - 1 <= stamp(rec["start"]) <= stamp(rec["end"]) <= after + 0.01, rec
        assert by_id[rec["id"]]["start"] == rec["start"]
        assert stamp(by_id[rec["id"]]["end"]) <= stamp(rec["end"])  # the end only grows
        assert stamp(rec["end"]) - stamp(rec["start"]) <= rec["duration_s"] + 0.002
    times = [stamp(rec[key]) for rec in ends for key in ("start", "end")]
    assert times == sorted(times)  # never backwards, also between events


def test_pcm_stream_formats_and_end_of_input(tmp_path: Path) -> None:
    raw = (np.stack([tone(1.0, sr=16000)] * 2, axis=1) * 32767).astype("<i2").tobytes()
    path = tmp_path / "in.raw"
    path.write_bytes(raw + b"\x01")  # a dangling odd byte is ignored
    with open(path, "rb") as handle:
        stream = pcm_stream(handle, 16000, "S16LE", 2, SR)
        out = np.concatenate(list(stream.blocks))
    assert abs(out.size - SR) <= 2 and abs(float(np.abs(out).max()) - 0.5) < 0.01
    with pytest.raises(ValueError, match="unknown PCM format"):
        pcm_stream(None, 16000, "mp3", 1, SR)


def test_watcher_waits_for_files_being_written(tmp_path: Path) -> None:
    (tmp_path / "old.wav").write_bytes(b"x")
    stop = threading.Event()
    seen: list[tuple[str, int]] = []

    def watch() -> None:
        for path in watch_directory(tmp_path, settle_s=0.8, poll_s=0.1, stop=stop):
            seen.append((path.name, path.stat().st_size))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    with open(tmp_path / "new.wav", "wb") as handle:  # a slow writer: 6 pieces, 0.2 s apart
        for _ in range(6):
            handle.write(b"\0" * 1000)
            handle.flush()
            time.sleep(0.2)
    (tmp_path / "skip.tmp").write_bytes(b"x")
    (tmp_path / ".hidden.wav").write_bytes(b"x")
    for _ in range(50):
        if len(seen) >= 2:
            break
        time.sleep(0.1)
    time.sleep(0.3)
    stop.set()
    thread.join(5)
    assert seen == [("old.wav", 1), ("new.wav", 6000)]


@pytest.mark.parametrize("inotify", [True, False])
def test_watcher_reads_a_file_that_was_empty_when_first_seen(tmp_path: Path, caplog,
                                                             inotify: bool) -> None:
    """A recorder or an upload that creates the file empty and writes it seconds later: read
    once written (was: "empty file", never read). A file whose audio was read and that changes
    later is read again as a continuation (its reader reports only what follows); one written
    over in place is read whole. With inotify only the names it reports are checked; polling
    checks every read file at each listing."""
    from edge_runtime.watch import FolderWatcher

    caplog.set_level("INFO", logger="edge-detect")
    stop = threading.Event()
    seen: list[tuple[str, int]] = []

    continued: list[bool] = []

    def watch() -> None:
        watcher = FolderWatcher(tmp_path, settle_s=0.3, poll_s=0.05, stop=stop,
                                use_inotify=inotify, rescan_s=0.0 if not inotify else 30.0)
        for path in watcher:
            seen.append((path.name, path.stat().st_size))
            continued.append(path.name in watcher.continued)

    def wait_for(n: int) -> None:
        wait_until(lambda: len(seen) >= n)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    (tmp_path / "late.wav").write_bytes(b"")
    time.sleep(1.0)  # settled, but empty: waited for, not read
    assert seen == []
    inode = (tmp_path / "late.wav").stat().st_ino
    with open(tmp_path / "late.wav", "r+b") as handle:  # in place: the same inode
        handle.write(b"\0" * 2000)
    assert (tmp_path / "late.wav").stat().st_ino == inode
    wait_for(1)
    for size in (3000, 4000):  # grows after its audio was read: read again as a continuation
        with open(tmp_path / "late.wav", "ab") as handle:
            handle.write(b"\0" * 1000)
        wait_for(len(seen) + 1)
        assert seen[-1] == ("late.wav", size) and continued[-1]
    # a new recording written over it in place (cp -f, ffmpeg -y: same inode): read
    with open(tmp_path / "late.wav", "r+b") as handle:
        handle.truncate(0)
        handle.write(b"\1" * 5000)
    assert (tmp_path / "late.wav").stat().st_ino == inode
    wait_for(4)
    time.sleep(0.6)
    stop.set()
    thread.join(5)
    # created empty: not read (nor called "empty file") until written
    assert seen == [("late.wav", 2000), ("late.wav", 3000), ("late.wav", 4000),
                    ("late.wav", 5000)]
    assert continued == [False, True, True, False]  # the rewrite is read whole
    assert caplog.text.count("grew since it was read") == 2, caplog.text
    assert "changed since it was read (a new recording under the same name" in caplog.text


def test_a_continuation_that_fails_stays_a_continuation(tmp_path: Path) -> None:
    """A file read (its events ending at 12 s), then grown, then unreadable as it stood (a
    copy cut mid-frame): when it grows again it is still read as a continuation from 12 s
    (was: read whole as "unreadable when first seen", its first events repeated)."""
    from edge_runtime.watch import FolderWatcher

    stop = threading.Event()
    quiet: list[float | None] = []
    watcher = FolderWatcher(tmp_path, settle_s=0.0, poll_s=0.05, stop=stop, use_inotify=False,
                            rescan_s=0.0)

    def watch() -> None:
        for path in watcher:
            quiet.append(watcher.quiet_until(path))
            if len(quiet) == 1:
                watcher.reported(path, 12.0)
            elif len(quiet) == 2:
                watcher.failed(path)
            else:
                watcher.reported(path, 0.0)

    def grow_and_wait(n: int) -> None:
        with open(tmp_path / "rec.wav", "ab") as handle:
            handle.write(bytes([n]) * 1000)
        wait_until(lambda: len(quiet) >= n)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    for n in (1, 2, 3):
        grow_and_wait(n)
    time.sleep(0.3)  # the failed reading is not retried until the file changes
    stop.set()
    thread.join(5)
    assert quiet == [None, 12.0, 12.0]


def _watch_until(folder: Path, record, n: int, **kwargs) -> list[str]:
    """Names a watcher with ``record`` yields until it has yielded ``n`` (or 5 s passed)."""
    from edge_runtime.watch import FolderWatcher

    stop = threading.Event()
    seen: list[str] = []

    def watch() -> None:
        for path in FolderWatcher(folder, settle_s=0.0, poll_s=0.05, stop=stop, record=record,
                                  **kwargs):
            seen.append(path.name)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more comes
    stop.set()
    thread.join(5)
    return seen


def test_a_restarted_watcher_does_not_read_its_files_again(tmp_path: Path) -> None:
    """The record of read files survives a restart: files read before are skipped; a new file,
    one written while the watcher was down and a new file under an old name are read."""
    from edge_runtime.watch_record import ReadRecord, record_path

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.wav", "b.wav", "c.wav", "gone.wav"):
        (folder / name).write_bytes(b"x" * 100)
    silent = b"\0" * (200 << 10)  # a fixed-size recording with silent ends
    (folder / "d.wav").write_bytes(silent + b"first" + silent)
    path = record_path(folder, tmp_path / "state")
    assert path.parent == tmp_path / "state" and path.name.startswith("in-")
    assert _watch_until(folder, ReadRecord(path, folder), 5) == ["a.wav", "b.wav", "c.wav",
                                                                 "d.wav", "gone.wav"]
    (folder / "gone.wav").unlink()
    (folder / "new.wav").write_bytes(b"x" * 100)
    with open(folder / "b.wav", "ab") as handle:  # written while the watcher was down
        handle.write(b"y" * 50)
    (folder / "c.tmp").write_bytes(b"z" * 100)
    (folder / "c.tmp").replace(folder / "c.wav")  # a new recording under the old name
    # the next fixed-size recording, only its middle differs, renamed over the old one (its
    # own mtime): read, though its size and both ends match
    (folder / "d.tmp").write_bytes(silent + b"other" + silent)
    os.utime(folder / "d.tmp", ns=(1, (folder / "d.wav").stat().st_mtime_ns + 10**9))
    (folder / "d.tmp").replace(folder / "d.wav")
    assert _watch_until(folder, ReadRecord(path, folder), 4) == ["b.wav", "c.wav", "d.wav",
                                                                 "new.wav"]
    # the record keeps only names present: gone.wav forgotten
    assert sorted(ReadRecord(path, folder).load()) == ["a.wav", "b.wav", "c.wav", "d.wav",
                                                       "new.wav"]
    assert _watch_until(folder, ReadRecord(path, folder), 1) == []
    # one record per folder, however it is named or spelt; --once keeps none
    assert record_path(tmp_path / "in" / ".." / "in", tmp_path / "state") == path
    assert _watch_until(folder, ReadRecord(path, folder), 5, once=True) == [
        "a.wav", "b.wav", "c.wav", "d.wav", "new.wav"]


def test_a_record_that_cannot_be_kept_is_one_line(tmp_path: Path, caplog) -> None:
    """A state folder that cannot be written: one error line, the files are still read; a
    record with a torn last line (power loss): that line is skipped, one warning."""
    from edge_runtime.watch_record import ReadRecord

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        (folder / name).write_bytes(b"x" * 100)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _watch_until(folder, ReadRecord(blocker / "rec.jsonl", folder), 2) == ["a.wav",
                                                                               "b.wav"]
    errors = [r for r in caplog.records if "record of read files" in r.getMessage()]
    assert len(errors) == 1 and errors[0].levelname == "ERROR", caplog.text
    assert "a restart will read its files again" in errors[0].getMessage()
    caplog.clear()
    rec = tmp_path / "rec.jsonl"
    assert _watch_until(folder, ReadRecord(rec, folder), 2) == ["a.wav", "b.wav"]
    with open(rec, "a", encoding="utf-8") as handle:
        handle.write('{"name": "d.wav", "inode": 1e999, "size": 1, "mtime_ns": 1}\n')
        handle.write('{"name": "c.wav", "ino')  # cut by a power loss
    assert _watch_until(folder, ReadRecord(rec, folder), 1) == []
    assert "2 unreadable line(s)" in caplog.text


def test_daemon_restarted_on_a_folder_reports_only_new_files(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    """edge-detect watching a folder, stopped and started again (a reboot): the recording it
    already reported raises no second event; a recording made since does."""
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "first.wav", np.concatenate([hiss(1.0), tone(4.0)]), SR)
    texts = []
    for run, name in ((1, None), (2, "second.wav")):
        if name:
            sf.write(folder / name, np.concatenate([hiss(1.0), tone(4.0)]), SR)
        events = tmp_path / f"run{run}.jsonl"
        proc = subprocess.Popen(cli("--model", str(tiny_model), "--input", str(folder),
                                    "--events", str(events), "--settle", "0.2"),
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (events.exists() and ended_events(events)):
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        texts.append(proc.communicate(timeout=60)[1].decode())
        assert proc.returncode == 0, texts[-1]
        sources = [Path(rec["source"]).name for rec in ended_events(events)]
        assert sources == ["first.wav" if run == 1 else "second.wav"], texts[-1]
    assert "1 file(s) already read before the restart are not read again" in texts[1]


def test_candidate_names() -> None:
    assert is_candidate(Path("a.WAV")) and is_candidate(Path("b.mp3"))
    for name in (".a.wav", "a.wav.part", "a.tmp", "a.txt", "a.wav~"):
        assert not is_candidate(Path(name))


def test_once_exits_after_existing_files(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.wav").write_bytes(b"x")
    names = [p.name for p in watch_directory(tmp_path, once=True, settle_s=0.0, poll_s=0.05)]
    assert names == ["0.wav", "1.wav", "2.wav"]


def test_toml_config_with_cli_override(tiny_model: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "loud.wav", np.concatenate([hiss(2.0), tone(4.0)]), SR)
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{tiny_model}"\ninput = "{tmp_path / "loud.wav"}"\n'
                    f'events = "{tmp_path / "a.jsonl"}"\nthreshold = 0.9999\n')
    res = subprocess.run(cli("--config", str(conf)), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "a.jsonl").read_text() == ""  # the config's strict threshold: no event
    res = subprocess.run(cli("--config", str(conf), "--threshold", "0.5"), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(ended_events(tmp_path / "a.jsonl")) == 1
    conf.write_text('treshold = 0.5\n')
    res = subprocess.run(cli("--config", str(conf)), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "treshold is not an option" in res.stderr
    assert "Traceback" not in res.stderr


def test_write_systemd_unit(tmp_path: Path) -> None:
    unit = tmp_path / "edge-detect.service"
    res = subprocess.run(cli("--input", "mic", "--device", "USB Audio", "--events",
                             "/var/log/e.jsonl", "--write-systemd-unit", str(unit)),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    text = unit.read_text()
    exec_line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert '"--device" "USB Audio"' in exec_line and '"--events" "/var/log/e.jsonl"' in exec_line
    assert "systemd-unit" not in exec_line
    assert "Restart=always" in text and "WantedBy=multi-user.target" in text


def test_a_file_that_gave_no_audio_is_tried_again_after_a_restart(tmp_path: Path) -> None:
    """ffmpeg missing, a permission fixed later: the file is never recorded as read — neither
    when it failed nor when the record is rewritten (a rotating recorder's many files) — so
    the next start tries it again."""
    from edge_runtime import watch_record
    from edge_runtime.watch import FolderWatcher
    from edge_runtime.watch_record import ReadRecord

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad.m4a").write_bytes(b"x" * 10)
    for i in range(30):
        (folder / f"r{i:02d}.wav").write_bytes(b"y" * 10)
    record = ReadRecord(tmp_path / "rec.jsonl", folder)
    watcher = FolderWatcher(folder, settle_s=0.0, poll_s=0.05, record=record)
    seen = []
    for path in watcher:
        seen.append(path.name)
        if path.name == "bad.m4a":
            watcher.failed(path)
        elif path.name.startswith("r"):
            path.unlink()  # rotated away: the record is soon mostly dead lines
        if len(seen) == 31:
            break
    watcher.close()
    record._lines = 10**6  # the next read file rewrites the record from what is alive
    record.add("x.wav", watch_record.Signature(1, 1, 1), watcher._readable())
    assert "bad.m4a" not in ReadRecord(tmp_path / "rec.jsonl", folder).load()
    assert _watch_until(folder, ReadRecord(tmp_path / "rec.jsonl", folder), 1) == ["bad.m4a"]


def test_a_live_input_lost_mid_event_is_deaf_before_the_event_ends(tiny_model: Path) -> None:
    """A camera stream that drops during an alarm: the observers hear "unhealthy" before the
    event's end, so Home Assistant shows the sensor unavailable, not a clear "off" from a
    detector that hears nothing. A recording read to its end is not a lost input."""
    from datetime import UTC, datetime

    from edge_runtime.audio import Decoded
    from edge_runtime.daemon import Runner
    from edge_runtime.detector import Detector
    from edge_runtime.events import EventConfig
    from edge_runtime.sources import Stream

    class Recorder:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_start(self, _record) -> None:
            self.calls.append("start")

        def on_update(self, _record) -> None:
            pass

        def on_end(self, _record) -> None:
            self.calls.append("end")

        def on_hop(self, _hop) -> None:
            pass

        def on_health(self, health) -> None:
            self.calls.append("healthy" if health.healthy else "deaf")

        def close(self) -> None:
            pass

    det = Detector(tiny_model, provider="cpu")
    audio = np.concatenate([hiss(2.0), tone(6.0)])  # the stream drops during the tone
    for finished, expected in ((False, ["start", "deaf", "end"]), (True, ["start", "end"])):
        sink = Recorder()
        decoded = Decoded(problem="stream ended")
        stream = Stream("cam", False, datetime.now(UTC),
                        iter(np.array_split(audio, 80)), decoded)
        stream.finished, stream.health_name = finished, "cam"  # as its Supervisor sets it
        Runner(det, EventConfig(threshold=det.threshold), [sink]).run_stream(stream)
        assert sink.calls == expected, sink.calls
