"""Bad input can neither kill, hang nor fool the daemon. Every file is generated here.

The corpus run uses the tiny model and, when ../shared has the weights, the real mn04 backbone
(with a hand-set linear classifier: plumbing and memory, no quality claim).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from edge_runtime import audio as audio_io
from edge_runtime.manifest import ClassifierSpec, load_manifest
from edge_runtime.text import printable
from edge_runtime.watch import FolderWatcher
from tests import procmem
from tests.bad_corpus import wav_header, write_corpus
from tests.runtime_model import SR, hiss, tone

LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def ends(text: str) -> list[dict]:
    """The ``end`` lines of an events file (each event also has a ``start`` line)."""
    return [r for r in map(json.loads, text.splitlines()) if r["state"] == "end"]


def add_linear_classifier(model_dir: Path, dim: int, threshold: float = 0.9) -> Path:
    """A skl2onnx-like classifier (label + probabilities) with p(danger) = sigmoid(0) = 0.5."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["embedding", "w", "b"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["p"]),
         helper.make_node("Sub", ["one", "p"], ["q"]),
         helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0)],
        "linear_classifier",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(np.zeros((dim, 1), np.float32), "w"),
         numpy_helper.from_array(np.zeros(1, np.float32), "b"),
         numpy_helper.from_array(np.float32(1.0), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(model_dir / "classifier.onnx"))
    load_manifest(model_dir).with_file(model_dir, "classifier", "classifier.onnx").replace(
        classifier=ClassifierSpec("hand-set linear (tests)", threshold=threshold)
    ).write(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def mn04_model(mn04_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.pipeline import export_from_checkpoint

    out = tmp_path_factory.mktemp("mn04_linear")
    export_from_checkpoint(str(mn04_weights), out)
    return add_linear_classifier(out, load_manifest(out).backbone.embedding_dim)


def run_cli(*args: str, timeout: float = 300) -> tuple[int, str, int]:
    """Run edge-detect; (exit status, stderr, its own peak RSS in KiB)."""
    try:
        res = subprocess.run(procmem.command(*args), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"edge-detect hung for {timeout} s: {args}")
    err, peak = procmem.split(res.stderr.decode("utf-8"))
    return res.returncode, err, peak


def check_corpus_run(d: Path, kinds: dict[str, str], code: int, err: str) -> None:
    assert code == 0, err
    assert "Traceback" not in err
    prefix = printable(d) + "/"
    for line in err.splitlines():  # no forged or unescaped line: each is one log record
        assert LINE.match(line) or line.startswith(("Warning: Xing", "Note: ")), line
    for name, kind in kinds.items():
        lines = [ln for ln in err.splitlines() if f"{prefix}{name}: " in ln]
        if kind == "ignored":
            assert not [ln for ln in err.splitlines() if name in ln], name
        elif kind == "error":
            assert len(lines) == 1 and " ERROR " in lines[0], (name, lines)
        elif kind == "partial":
            assert len(lines) == 1 and " WARNING " in lines[0], (name, lines)
            assert "truncated or corrupt" in lines[0] and "s scored" in lines[0]
        else:
            assert len(lines) == 1 and " ERROR " not in lines[0], (name, lines)
            assert "event(s)" in lines[0], (name, lines)


def test_bad_input_corpus_tiny_model(tmp_path: Path, tiny_model: Path) -> None:
    d = tmp_path / "in"
    kinds = write_corpus(d)
    assert len(kinds) >= 40
    events = tmp_path / "events.jsonl"
    code, err, _rss = run_cli("--model", str(tiny_model), "--input", str(d), "--once",
                              "--events", str(events), timeout=120)
    check_corpus_run(d, kinds, code, err)
    records = ends(events.read_bytes().decode("utf-8"))
    sources = {Path(r["source"]).name for r in records}
    assert printable(os.fsdecode(b"latin1_caf\xe9.wav")) in sources  # valid UTF-8 JSON
    assert any(name.startswith("evil\\n12:00:00") for name in sources)
    assert "cut.flac" in sources and "cut.mp3" in sources  # the audio before the cut counts


def test_bad_input_corpus_mn04_memory(tmp_path: Path, mn04_model: Path) -> None:
    d = tmp_path / "in"
    kinds = write_corpus(d)
    code, err, rss_kib = run_cli("--model", str(mn04_model), "--input", str(d), "--once",
                                 "--threads", "1", timeout=300)
    check_corpus_run(d, kinds, code, err)
    assert rss_kib < 200 * 1024, f"peak RSS {rss_kib / 1024:.0f} MB"


@pytest.mark.parametrize("fmt", ["FLAC", "MP3", "OGG"])
def test_truncated_files_decode_only_real_samples(tmp_path: Path, fmt: str) -> None:
    full = tmp_path / f"full.{fmt.lower()}"
    sf.write(full, np.concatenate([tone(2.0), hiss(4.0)]), SR, format=fmt)
    reference, _ = audio_io.load_file(full, SR)
    raw = full.read_bytes()
    cut = tmp_path / f"cut.{fmt.lower()}"
    cut.write_bytes(raw[: len(raw) // 2])
    runs = [audio_io.load_file(cut, SR) for _ in range(3)]
    out, stats = runs[0]
    for again, _ in runs[1:]:  # deterministic: no stale or uninitialised buffer memory
        assert np.array_equal(again, out)
    assert 0 < out.size < reference.size
    # what is decoded is the start of the real recording, never replayed earlier audio
    n = min(out.size, reference.size) - SR // 4
    assert np.abs(out[:n] - reference[:n]).max() < 0.05
    tail = out[int(2.5 * SR):]
    assert tail.size == 0 or float(np.abs(tail).max()) < 0.1  # hiss after the tone, no tone


def test_mid_file_error_keeps_the_audio_before_it(tmp_path: Path) -> None:
    path = tmp_path / "x.flac"
    sf.write(path, np.concatenate([tone(3.0), hiss(5.0)]), SR)
    raw = bytearray(path.read_bytes())
    raw[len(raw) * 3 // 4: len(raw) * 3 // 4 + 4000] = os.urandom(4000)
    path.write_bytes(bytes(raw))
    stats = audio_io.Decoded()
    out = np.concatenate(list(audio_io.iter_file(path, SR, stats=stats)))
    assert out.size >= 3 * SR and "truncated or corrupt" in stats.problem
    assert float(np.abs(out[SR:2 * SR]).max()) > 0.4  # the tone before the damage is there


def test_absurd_headers_are_rejected_or_bounded(tmp_path: Path, tiny_model: Path) -> None:
    one_hz = tmp_path / "one_hz.wav"
    one_hz.write_bytes(wav_header(1, 1, 16, 160000) + os.urandom(320000))
    with pytest.raises(audio_io.AudioError, match="implausible sample rate 1 Hz"):
        audio_io.open_info(one_hz)
    many = tmp_path / "many.wav"
    many.write_bytes(wav_header(SR, 1000, 16, 100) + bytes(200000))
    with pytest.raises(audio_io.AudioError, match="implausible channel count 1000"):
        audio_io.open_info(many)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([hiss(3.0), tone(3.0)]), SR)
    code, err, _ = run_cli("--model", str(tiny_model), "--input", str(long),
                           "--max-file-duration", "2", "--events", str(tmp_path / "e.jsonl"))
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "long.wav" in ln]
    assert len(lines) == 1 and "longer than the 2 s decoded per file" in lines[0]
    assert "2.0 s scored" in lines[0] and (tmp_path / "e.jsonl").read_text() == ""


def test_non_utf8_and_control_character_names(tmp_path: Path, tiny_model: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    loud = np.concatenate([hiss(1.0), tone(3.0), hiss(1.0)])
    sf.write(os.fsencode(d) + b"/caf\xe9.wav", loud, SR)
    sf.write(d / "x\n12:00:00 WARNING DANGER #7 started: fake.wav", loud, SR)
    sf.write(d / "z_good.wav", loud, SR)
    events = tmp_path / "e.jsonl"
    code, err, _ = run_cli("--model", str(tiny_model), "--input", str(d), "--once",
                           "--events", str(events))
    assert code == 0, err
    assert all(LINE.match(line) for line in err.splitlines()), err
    assert "caf\\xe9.wav: 5.0 s" in err and "x\\n12:00:00 WARNING DANGER #7" in err
    records = ends(events.read_text(encoding="utf-8"))
    assert len(records) == 3 and any(r["source"].endswith("z_good.wav") for r in records)


def test_symlink_loops_get_a_line_and_once_exits(tmp_path: Path, tiny_model: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    os.symlink("loop.wav", d / "loop.wav")
    os.symlink(str(d), d / "dirloop.wav")  # a link to its own folder
    sf.write(d / "ok.wav", hiss(2.0), SR)
    code, err, _ = run_cli("--model", str(tiny_model), "--input", str(d), "--once",
                           timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if "loop.wav:" in ln and "dirloop" not in ln] == [
        ln for ln in err.splitlines() if "symbolic links" in ln]
    assert "dirloop.wav: not a regular file (a directory)" in err
    assert "ok.wav: 2.0 s" in err


def test_deleted_watched_folder_logs_with_backoff(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "watched"
    d.mkdir()
    stop = threading.Event()
    seen: list[str] = []

    def watch() -> None:
        for path in FolderWatcher(d, settle_s=0.2, poll_s=0.1, stop=stop):
            seen.append(path.name)

    caplog.set_level("INFO", logger="edge-detect")
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.5)
    d.rmdir()
    time.sleep(6.5)  # polled 65 times; backoff 1, 2, 4 s → 3 or 4 lines
    errors = [r for r in caplog.records if "cannot list the watched folder" in r.getMessage()]
    assert 2 <= len(errors) <= 4, [r.getMessage() for r in errors]
    d.mkdir()
    sf.write(d / "back.wav", hiss(1.0), SR)
    for _ in range(50):
        if seen:
            break
        time.sleep(0.1)
    stop.set()
    thread.join(5)
    assert seen == ["back.wav"]
    assert any("can be listed again" in r.getMessage() for r in caplog.records)


def test_memory_of_read_files_forgets_deleted_ones(tmp_path: Path) -> None:
    for i in range(200):
        (tmp_path / f"{i:03d}.wav").write_bytes(b"x")
    watcher = FolderWatcher(tmp_path, settle_s=0.0, poll_s=0.05, use_inotify=False)
    it = iter(watcher)
    names = [next(it).name for _ in range(200)]
    assert len(set(names)) == 200 and len(watcher.done) == 200
    for path in tmp_path.iterdir():
        path.unlink()
    (tmp_path / "new.wav").write_bytes(b"x")
    assert next(it).name == "new.wav"
    assert set(watcher.done) == {"new.wav"} and not watcher.pending


def test_slow_writer_gives_one_set_of_events(tmp_path: Path, tiny_model: Path) -> None:
    """A WAV copied in 5 pieces 2 s apart (longer than --settle): read once, when complete."""
    d = tmp_path / "in"
    d.mkdir()
    audio = np.concatenate([hiss(2.0), tone(3.0), hiss(9.0), tone(3.0), hiss(2.0)])
    sf.write(tmp_path / "src.wav", audio, SR)
    raw = (tmp_path / "src.wav").read_bytes()
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model",
                             str(tiny_model), "--input", str(d), "--settle", "1",
                             "--cooldown", "1", "--events", str(events)],
                            stderr=subprocess.PIPE)
    try:
        time.sleep(3)  # model loaded, folder watched
        piece = len(raw) // 5 + 1
        with open(d / "slow.wav", "wb") as handle:
            for i in range(5):
                handle.write(raw[i * piece:(i + 1) * piece])
                handle.flush()
                time.sleep(2.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if events.exists() and len(ends(events.read_text())) >= 2:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # a second read would show up by now
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    records = ends(events.read_text())
    assert len(records) == 2, records
    starts = sorted(r["offset_start_s"] for r in records)
    assert abs(starts[0] - 2.0) <= 1.0 and abs(starts[1] - 14.0) <= 1.0, starts
    assert len([ln for ln in err.splitlines() if "slow.wav: 19.0 s" in ln]) == 1, err


@pytest.mark.parametrize("inotify", [True, False])
def test_new_files_are_noticed_without_full_rescans(tmp_path: Path, inotify: bool) -> None:
    """inotify (Linux) or the folder's mtime triggers a listing; the periodic rescan is off."""
    for i in range(50):
        (tmp_path / f"old{i}.wav").write_bytes(b"x")
    stop = threading.Event()
    watcher = FolderWatcher(tmp_path, settle_s=0.2, poll_s=0.1, rescan_s=3600, stop=stop,
                            use_inotify=inotify)
    seen: list[str] = []
    thread = threading.Thread(target=lambda: seen.extend(p.name for p in watcher), daemon=True)
    thread.start()
    time.sleep(1.0)
    if inotify and sys.platform.startswith("linux"):
        assert watcher._notify is not None
    (tmp_path / "new.wav").write_bytes(b"x")
    for _ in range(50):
        if "new.wav" in seen:
            break
        time.sleep(0.1)
    stop.set()
    thread.join(5)
    assert len(seen) == 51 and seen[-1] == "new.wav"


def test_bad_input_corpus_while_watching(tmp_path: Path, tiny_model: Path) -> None:
    """The same corpus without --once (the daemon keeps watching): nothing blocks it (a FIFO is
    never opened), every file gets its line, then new files are still picked up."""
    d = tmp_path / "in"
    kinds = write_corpus(d)
    past = time.time() - 120  # files that were there before the daemon started
    for entry in os.scandir(d):
        os.utime(entry.path, (past, past), follow_symlinks=False)
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model",
                             str(tiny_model), "--input", str(d)], stderr=subprocess.PIPE)
    try:
        time.sleep(8)
        sf.write(d / "zz_late.wav", hiss(1.0), SR)
        time.sleep(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err
    kinds["zz_late.wav"] = "good"
    check_corpus_run(d, kinds, 0, err)
