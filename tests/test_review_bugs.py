"""Bugs a review found (issue 9), each pinned by a test that failed before its fix."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import atomic
from edge_runtime.events import EventConfig, EventTracker
from tests.helpers import REPO, ended_events
from tests.runtime_model import SR, build_tiny_model, hiss, tone


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- peak_probability without an AudioSet head ----------------------------------------------

def test_peak_is_the_highest_window_when_no_payload_is_attached() -> None:
    tracker = EventTracker(EventConfig(threshold=0.5, min_duration_s=1.0), hop_s=1.0)
    out = []
    for i, p in enumerate([0.6, 0.99, 0.7, 0.6, 0.0, 0.0, 0.0, 0.0]):
        out += tracker.update(float(i), float(i + 5), p, payload=None)
    out += tracker.close(13.0)
    (event,) = [t.event for t in out if t.kind == "end"]
    assert event.peak == pytest.approx(0.99)


def test_headless_model_dir_reports_the_true_peak(tmp_path: Path) -> None:
    """End to end: a model dir without head/labels; the JSONL peak is the max window p."""
    import soundfile as sf

    from edge_runtime.manifest import load_manifest

    model = build_tiny_model(tmp_path / "model")
    manifest = load_manifest(model)
    files = {k: v for k, v in manifest.files.items() if k not in ("head", "labels")}
    manifest.replace(files=files).write(model)
    # p ≈ 0.6 for the soft tone, ≈ 0.98 while the loud second is in the window
    audio = np.concatenate([hiss(3.0), tone(3.0, amp=0.13), tone(1.0, amp=0.3),
                            tone(3.0, amp=0.13), hiss(8.0)])
    sf.write(tmp_path / "clip.wav", audio, SR)
    events = tmp_path / "events.jsonl"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", str(tmp_path / "clip.wav"), "--events", str(events),
                          "--window-only"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (record,) = ended_events(events)
    from edge_runtime.detector import Detector

    best = Detector(model, provider="cpu", chunk_decisions=False).predict(audio)
    assert record["peak_probability"] == pytest.approx(best.probability, abs=1e-4)
    assert record["peak_probability"] > record["mean_probability"] + 0.1


# --- Event.index has one owner --------------------------------------------------------------

def test_runner_numbers_events_across_streams(tmp_path: Path) -> None:
    import soundfile as sf

    from edge_runtime.daemon import Runner
    from edge_runtime.detector import Detector
    from edge_runtime.sources import file_stream

    model = build_tiny_model(tmp_path / "model")
    clip = tmp_path / "a.wav"
    sf.write(clip, np.concatenate([hiss(2.0), tone(3.0), hiss(8.0)]), SR)
    seen: list[int] = []

    class Recorder:
        def on_start(self, record) -> None:
            seen.append(record.index)

        def on_update(self, record) -> None:
            pass

        def on_end(self, record) -> None:
            seen.append(record.index)

        def close(self) -> None:
            pass

    runner = Runner(Detector(model, provider="cpu"), EventConfig(threshold=0.5), [Recorder()])
    runner.run_stream(file_stream(clip, SR))
    runner.run_stream(file_stream(clip, SR))
    assert seen == [1, 1, 2, 2]


# --- files honour the umask -----------------------------------------------------------------

def test_atomic_writes_honour_the_umask(tmp_path: Path, umask_022) -> None:
    paths = [atomic.write_text(tmp_path / "a.txt", "x"),
             atomic.write_json(tmp_path / "b.json", {"a": 1}),
             atomic.write_with(tmp_path / "c.bin", lambda t: t.write_bytes(b"c"))]
    assert [mode(p) for p in paths] == [0o644] * 3
    os.umask(0o077)
    assert mode(atomic.write_text(tmp_path / "d.txt", "x")) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_classifier_onnx_cache_and_clips_are_0644(tmp_path: Path, umask_022) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from edge_runtime.lifecycle import EventRecord
    from edge_runtime.sinks import AudioHistory, ClipSink
    from training.embed import save_npz_atomic
    from training.onnx_classifier import save_atomic, to_onnx

    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    pipe = Pipeline([("s", StandardScaler()), ("c", LogisticRegression())]).fit(
        x, np.arange(20) % 2)
    save_atomic(to_onnx(pipe, 3), tmp_path / "classifier.onnx")
    save_npz_atomic(tmp_path / "cache.npz", x=x)
    history = AudioHistory(SR)
    history.add(tone(3.0))
    sink = ClipSink(tmp_path / "clips", history)
    record = EventRecord("id", "end", 1, "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.500Z",
                         1.5, 0.9, 0.9, 2, "mic", "0" * 64, stream_start_s=0.5,
                         stream_end_s=2.0)
    sink.on_end(record)
    assert mode(tmp_path / "classifier.onnx") == 0o644
    assert mode(tmp_path / "cache.npz") == 0o644
    assert mode(Path(record.clip)) == 0o644


def test_model_dir_files_are_0644(tmp_path: Path, umask_022) -> None:
    model = build_tiny_model(tmp_path / "model")
    assert mode(model / "manifest.json") == 0o644


# --- build tools, CLIs ------------------------------------------------------------------------

def test_tool_versions_does_not_import_panns_inference() -> None:
    code = ("import sys; from export.onnx_export import tool_versions; v = tool_versions(); "
            "assert 'panns_inference' not in sys.modules, 'imported'; print(v['torch'])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()


def test_edge_train_accepts_dash_h() -> None:
    res = subprocess.run([sys.executable, "-m", "training.cli", "-h"], capture_output=True,
                         text=True, timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "build" in res.stdout
    sub = subprocess.run([sys.executable, "-m", "training.cli", "build", "-h"],
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert sub.returncode == 0 and "--data" in sub.stdout


# --- nothing written into the repository; the README main job is idempotent -----------------

def test_fetch_esc50_defaults_to_the_cache_not_the_repository(tmp_path: Path,
                                                              monkeypatch) -> None:
    from click.testing import CliRunner

    from tests.test_training_fetch import make_archive
    from training.cli import main

    monkeypatch.setenv("EDGE_DETECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    archive = make_archive(tmp_path / "src.zip")
    result = CliRunner().invoke(main, ["fetch-esc50", "--url", archive.as_uri()])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "cache" / "data" / "ESC-50")
    assert not (tmp_path / "data").exists()


def test_fast_benchmarks_write_outside_the_tracked_tree() -> None:
    from benchmarks.run import default_out

    fast = default_out(True).relative_to(REPO)
    res = subprocess.run(["git", "check-ignore", "-q", str(fast / "x.json")], cwd=REPO)
    assert res.returncode == 0, f"{fast} is not git-ignored"
    assert default_out(False) == REPO / "benchmarks" / "results"


def test_once_run_is_idempotent(tmp_path: Path) -> None:
    import soundfile as sf

    model = build_tiny_model(tmp_path / "model")
    (tmp_path / "in").mkdir()
    sf.write(tmp_path / "in" / "a.wav", np.concatenate([hiss(2.0), tone(3.0), hiss(8.0)]), SR)
    events = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "edge_runtime.cli", "--model", str(model), "--input",
           str(tmp_path / "in"), "--once", "--events", str(events)]
    for _ in range(2):
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert len(ended_events(events)) == 1 and len(events.read_text().splitlines()) == 2


# --- second review (2026-12-03): bad paths and inputs, event ends, cooldown ---------------

def edge_detect(*args: str, stdin: int | None = subprocess.DEVNULL,
                shell_suffix: str = "") -> subprocess.CompletedProcess:
    """Run the CLI (``shell_suffix``: redirections for bash, e.g. ``<&-``)."""
    if shell_suffix:
        cmd = " ".join(map(repr, [sys.executable, "-m", "edge_runtime.cli", *args]))
        return subprocess.run(["bash", "-c", f"exec {cmd} {shell_suffix}"],
                              capture_output=True, text=True, timeout=120)
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args], stdin=stdin,
                          capture_output=True, text=True, timeout=120)


def one_error_line(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    errors = [ln for ln in res.stderr.splitlines() if "edge-detect: error:" in ln]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def loud_wav(tmp_path: Path) -> Path:
    import soundfile as sf

    path = tmp_path / "loud.wav"
    sf.write(path, np.concatenate([hiss(2.0), tone(4.0), hiss(4.0)]), SR)
    return path


def test_output_paths_under_a_file_are_one_line(tmp_path: Path, tiny_model: Path,
                                                loud_wav: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    base = ("--model", str(tiny_model), "--input", str(loud_wav))
    one_error_line(edge_detect(*base, "--events", str(afile / "x.jsonl")), str(afile / "x.jsonl"))
    one_error_line(edge_detect(*base, "--once", "--events", str(afile / "x.jsonl")),
                   str(afile / "x.jsonl"))
    one_error_line(edge_detect(*base, "--save-clips", str(afile / "clips")), str(afile))


def test_once_events_through_a_symlink_keeps_the_link(tmp_path: Path, tiny_model: Path,
                                                      loud_wav: Path) -> None:
    target = tmp_path / "target.jsonl"
    target.write_text('{"old": true}\n')
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    res = edge_detect("--model", str(tiny_model), "--input", str(loud_wav), "--once",
                      "--events", str(link))
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and "old" not in target.read_text()
    assert len(ended_events(target)) == 1


def test_a_config_from_an_endless_pipe_is_refused_in_one_line(tiny_model: Path) -> None:
    res = edge_detect("--model", str(tiny_model), "--config", "/dev/zero")
    one_error_line(res, "/dev/zero", "larger than 1 MiB")


def test_a_key_both_at_top_level_and_in_the_table_is_refused(tmp_path: Path) -> None:
    from edge_runtime import config as cfg

    conf = tmp_path / "edge.toml"
    conf.write_text('threshold = 0.6\n[edge-detect]\nthreshold = 0.7\n')
    with pytest.raises(cfg.ConfigError, match="threshold is set both"):
        cfg.load(conf)


def test_empty_input_and_closed_stdin_are_one_line(tiny_model: Path) -> None:
    one_error_line(edge_detect("--model", str(tiny_model), "--input", ""), "--input", "''")
    one_error_line(edge_detect("--model", str(tiny_model), "--input", "-", "--rate", "32000",
                               shell_suffix="<&-"), "stdin", "closed")


def test_manifest_that_does_not_fit_its_graphs_is_refused_at_load(tmp_path: Path,
                                                                  loud_wav: Path) -> None:
    from edge_runtime.manifest import load_manifest

    model = build_tiny_model(tmp_path / "model")
    manifest = load_manifest(model)
    manifest.replace(streaming=manifest.streaming.replace(chunk_samples=16100)).write(model)
    res = edge_detect("--model", str(model), "--input", str(loud_wav))
    one_error_line(res, str(model), "a test window through its graphs failed")
    assert "onnxruntime_src" not in res.stderr and len(res.stderr.splitlines()) <= 2


def test_out_of_range_mtime_is_timed_from_now(tmp_path: Path, loud_wav: Path) -> None:
    from edge_runtime.sources import file_stream

    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm (tmpfs) to hold a file dated after year 9999")
    path = shm / f"edge-detect-test-{os.getpid()}.wav"
    path.write_bytes(loud_wav.read_bytes())
    try:
        os.utime(path, (0, 3e11))  # year ~11476
        if path.stat().st_mtime < 2.6e11:
            pytest.skip(f"{shm} clamps modification times")
        stream = file_stream(path, SR)
        assert abs(stream.base_time.timestamp() - __import__("time").time()) < 60
        assert sum(b.size for b in stream.blocks) == 10 * SR
    finally:
        path.unlink(missing_ok=True)


def test_event_at_end_of_stream_ends_where_its_chunks_placed_it() -> None:
    """Loud from 3 to 7 s of a 10 s stream: the end is 7 s, not the end of the audio."""
    tracker = EventTracker(EventConfig(threshold=0.5, min_duration_s=1.0), hop_s=1.0)
    loud = [1.0 if 3 <= t < 7 else 0.0 for t in range(10)]
    out = []
    for end in range(5, 11):  # 5 s windows, hop 1 s; chunk p = the chunk's loudness
        chunks = loud[end - 5:end]
        out += tracker.update(float(end - 5), float(end), max(chunks), payload=None,
                              chunk_probs=chunks)
    out += tracker.close(10.0)
    (end,) = [t.event for t in out if t.kind == "end"]
    assert (end.start_s, end.end_s) == (3.0, 7.0)


def test_cooldown_zero_ends_an_event_at_its_first_quiet_window() -> None:
    tracker = EventTracker(EventConfig(threshold=0.5, min_duration_s=1.0, cooldown_s=0.0),
                           hop_s=1.0)
    kinds = []
    for i, p in enumerate([0.9, 0.9, 0.1, 0.9, 0.9]):
        kinds += [t.kind for t in tracker.update(float(i), float(i + 5), p)]
    assert kinds == ["start", "end", "start"]
    one = EventTracker(EventConfig(threshold=0.5, min_duration_s=1.0, cooldown_s=1.0), hop_s=1.0)
    kinds = []
    for i, p in enumerate([0.9, 0.9, 0.1, 0.9, 0.9]):
        kinds += [t.kind for t in one.update(float(i), float(i + 5), p)]
    assert kinds == ["start"]  # one quiet second is within a 1 s cooldown: the same event


def test_predict_refuses_channel_first_arrays_and_too_short_files(tmp_path: Path,
                                                                 tiny_model: Path) -> None:
    import soundfile as sf

    from edge_runtime.audio import AudioError
    from edge_runtime.detector import Detector

    det = Detector(tiny_model)
    with pytest.raises(AudioError, match=r"channel-first array wants \.T"):
        det.predict(np.zeros((2, SR), np.float32))
    assert det.predict(np.zeros((SR, 2), np.float32)).label == "safe"
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(10, np.float32), 768000)
    with pytest.raises(AudioError, match="too short to score"):
        det.predict(short)


def test_mic_gives_up_when_portaudio_hangs_closing_streams(monkeypatch) -> None:
    """Threads blocked closing dead streams are bounded: past the limit a reopen is fatal."""
    import threading

    from edge_runtime import mic

    release = threading.Event()
    blocked = [threading.Thread(target=release.wait, daemon=True)
               for _ in range(mic.MAX_HUNG_CLOSES)]
    for thread in blocked:
        thread.start()
    monkeypatch.setattr(mic, "_hung", list(blocked))
    try:
        with pytest.raises(mic.PortAudioMissing, match=f"has not closed {mic.MAX_HUNG_CLOSES}"):
            mic.mic_stream(None, SR, threading.Event())
    finally:
        release.set()


def test_a_truncated_wav_is_reported_and_a_lone_bad_file_counted(tmp_path: Path,
                                                                  tiny_model: Path,
                                                                  loud_wav: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(loud_wav.read_bytes()[:50000])  # libsndfile clamps its length silently
    res = edge_detect("--model", str(tiny_model), "--input", str(cut))
    assert res.returncode == 0, res.stderr
    assert "cut.wav: truncated or corrupt, 0.8 s decoded" in res.stderr
    res = edge_detect("--model", str(tiny_model), "--input", str(tmp_path / "missing.wav"))
    assert res.returncode == 1 and "0 stream(s), 1 failed" in res.stderr


def test_a_missing_ffmpeg_is_fatal_at_once_not_retried(tmp_path: Path, tiny_model: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                          "--input", "rtsp://127.0.0.1:9/cam"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PATH": str(empty)})
    one_error_line(res, "ffmpeg is not installed")


def test_edge_train_usage_mistakes_are_one_line() -> None:
    for args in (["build", "--classifier", "svm"], ["calibrate", "--budget-per-hour", "-1"],
                 ["evaluate", "--bogus"]):
        res = subprocess.run([sys.executable, "-m", "training.cli", *args],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("edge-train: error: ")


def test_a_bad_sources_table_names_its_config_file(tmp_path: Path, tiny_model: Path) -> None:
    conf = tmp_path / "edge.toml"
    conf.write_text('[sources.kitchen]\ninput = "x.wav"\ndevise = "USB"\n')
    one_error_line(edge_detect("--model", str(tiny_model), "--config", str(conf)),
                   f"{conf}: [sources.kitchen]: unknown key(s) devise")


def test_a_truncated_file_dated_in_the_future_is_read_after_the_wait(tmp_path: Path,
                                                                    loud_wav: Path) -> None:
    """A clock-skewed recorder's cut WAV (header promises more, mtime in an hour) is waited
    for ``incomplete_s`` of no change, not until its mtime has passed."""
    import threading
    import time

    from edge_runtime.watch import FolderWatcher

    folder = tmp_path / "in"
    folder.mkdir()
    cut = folder / "cut.wav"
    cut.write_bytes(loud_wav.read_bytes()[:50000])
    future = time.time() + 3600
    os.utime(cut, (future, future))
    stop = threading.Event()
    timer = threading.Timer(20.0, stop.set)
    timer.start()
    watcher = FolderWatcher(folder, settle_s=0.1, poll_s=0.1, incomplete_s=1.0, stop=stop,
                            use_inotify=False)
    started = time.monotonic()
    try:
        got = next(iter(watcher), None)
    finally:
        timer.cancel()
        stop.set()
        watcher.close()
    assert got == cut and 0.9 <= time.monotonic() - started < 20.0


def test_bare_edge_train_shows_its_help() -> None:
    res = subprocess.run([sys.executable, "-m", "training.cli"], capture_output=True,
                         text=True, timeout=60)
    assert "Usage:" in res.stdout + res.stderr and "Commands:" in res.stdout + res.stderr
    assert "edge-train: error" not in res.stderr


def test_a_capped_file_is_timed_from_its_whole_length(tmp_path: Path, tiny_model: Path) -> None:
    """--max-file-duration reads the first part of a long recording; its start is still
    ``mtime - whole length`` (was: mtime - the part read, so events came out late)."""
    from datetime import datetime

    import soundfile as sf

    path = tmp_path / "long.wav"
    sf.write(path, np.concatenate([tone(6.0), hiss(44.0)]), SR)
    os.utime(path, (1_800_000_000, 1_800_000_000))
    events = tmp_path / "e.jsonl"
    res = edge_detect("--model", str(tiny_model), "--input", str(path), "--once",
                      "--max-file-duration", "20", "--events", str(events))
    assert res.returncode == 0, res.stderr
    (event,) = ended_events(events)
    start = datetime.fromisoformat(event["start"].replace("Z", "+00:00")).timestamp()
    assert abs(start - (1_800_000_000 - 50.0 + event["offset_start_s"])) < 0.01
    assert event["offset_start_s"] < 6.0


def test_a_recording_behind_a_password_or_a_file_url_is_known_as_one(tmp_path: Path) -> None:
    """A recording read through a URL is read once, not reopened (and its events reported
    again) forever: that needs its length, also when the URL holds user:password (sent as
    Basic authentication; was: urllib took them for the host name) or is file://."""
    import base64
    import http.server
    import threading

    from edge_runtime.netsource import has_length

    body = b"RIFF" + b"\0" * 4000
    token = base64.b64encode(b"user:s3cr#t").decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
            ok = self.headers.get("Authorization") == f"Basic {token}"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        assert has_length(f"http://user:s3cr%23t@127.0.0.1:{port}/a.wav")
        assert not has_length(f"http://user:wrong@127.0.0.1:{port}/a.wav")
        assert not has_length(f"http://127.0.0.1:{port}/a.wav")
    finally:
        server.shutdown()
        server.server_close()
    (tmp_path / "rec.wav").write_bytes(body)
    assert has_length((tmp_path / "rec.wav").as_uri())
    assert not has_length((tmp_path / "missing.wav").as_uri())
    assert not has_length("http://[::1/a")


@pytest.mark.parametrize("codec,rate,channels", [("pcm_s16le", 16000, 1),
                                                  ("pcm_f32le", 48000, 2), ("pcm_u8", 8000, 1)])
def test_a_wav_piped_to_stdin_is_read_as_its_header_says(tmp_path: Path, codec: str, rate: int,
                                                         channels: int) -> None:
    """ffmpeg (and arecord) write a WAV header to a pipe: its rate, channels and encoding win
    over --rate/--format (was: the header read as samples, a 16 kHz pipe played at 48 kHz)."""
    import shutil

    import soundfile as sf

    from edge_runtime.sources import pcm_stream

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (.ci/setup installs it)")
    t = np.arange(SR * 2) / SR
    sf.write(tmp_path / "a.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SR)
    piped = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(tmp_path / "a.wav"),
                            "-ar", str(rate), "-ac", str(channels), "-c:a", codec, "-f", "wav",
                            "-"], capture_output=True, check=True, timeout=60).stdout
    (tmp_path / "pipe").write_bytes(piped)
    with open(tmp_path / "pipe", "rb") as handle:
        stream = pcm_stream(handle, 48000, "s16le", 1, SR)
        out = np.concatenate(list(stream.blocks))
    assert abs(out.size - 2 * SR) < SR * 0.01  # 2 s, not 2 s × 48000 / rate
    spectrum = np.abs(np.fft.rfft(out[SR // 2: SR // 2 + SR]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 2  # the tone's own pitch, 1 Hz bins
    level = 0.5 / np.sqrt(channels)  # ffmpeg's mono → stereo upmix is −3 dB per channel
    assert abs(float(np.abs(out).max()) - level) < 0.03
    assert stream.decoded.sample_rate == rate and stream.decoded.channels == channels


def test_raw_pcm_that_starts_like_riff_is_still_raw() -> None:
    from edge_runtime.sources import piped_wav

    assert piped_wav(b"\0\1" * 100) is None
    assert piped_wav(b"RIF") is True and piped_wav(b"RIFFxxxxWAVEfm") is True
    assert piped_wav(b"RIFFxxxxAVI " + b"\0" * 40) is None


def test_an_interrupted_once_run_does_not_exit_as_complete(tiny_model: Path,
                                                          tmp_path: Path) -> None:
    """--once cut short by SIGTERM: its events are flushed, and the exit status (128 + the
    signal) and a warning say the batch is not complete (was: 0, as a finished batch)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model",
                             str(tiny_model), "--input", "-", "--once", "--events",
                             str(tmp_path / "e.jsonl")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("\0" * 64000)  # some audio; the pipe stays open
        proc.stdin.flush()
        time.sleep(3.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
