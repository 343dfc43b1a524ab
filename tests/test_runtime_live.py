"""Network and named sources, for real: a live WAV served over HTTP on 127.0.0.1 (a Python
server started by the test), decoded by the real ffmpeg; the server is killed and restarted."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.serve import parse_sources
from tests import procmem
from tests.runtime_model import SR, hiss, tone

SERVER = Path(__file__).with_name("live_wav_server.py")


def ends(text: str) -> list[dict]:
    """The ``end`` lines of an events file (each event also has a ``start`` line)."""
    return [r for r in map(json.loads, text.splitlines()) if r["state"] == "end"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, kind: str = "python", tmp: Path | None = None) -> subprocess.Popen:
    """A live WAV on http://127.0.0.1:PORT/live.wav: tests/live_wav_server.py, or ffmpeg
    itself (``-listen 1``: one client per run, which is all a reconnect needs)."""
    if kind == "ffmpeg":
        clip = (tmp or Path("/tmp")) / "cycle.wav"
        if not clip.exists():
            sf.write(clip, np.concatenate([hiss(8.0, sr=16000), tone(3.0, sr=16000)]), 16000,
                     subtype="PCM_16")
        return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re",
                                 "-stream_loop", "-1", "-i", str(clip), "-c:a", "pcm_s16le",
                                 "-f", "wav", "-listen", "1",
                                 f"http://127.0.0.1:{port}/live.wav"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([sys.executable, str(SERVER), str(port)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"serving"
    return proc


class Daemon:
    """edge-detect in the background; its stderr lines collected as they come."""

    def __init__(self, *args: str, stdin: int | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", *args],
                                     stdin=stdin, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float, after: int = 0) -> int:
        """Index of the first line at or after ``after`` containing ``text``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(after, len(self.lines)):
                if text in self.lines[i]:
                    return i
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        pytest.fail(f"no line with {text!r} within {timeout} s:\n" + "\n".join(self.lines))

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None,
                                  reason="ffmpeg not installed (apt-get install ffmpeg)")


@pytest.mark.slow  # 14-21 s each: a live stream, a server restart, a reconnect
@needs_ffmpeg
@pytest.mark.parametrize("server_kind", ["ffmpeg", "python"])
def test_http_stream_event_then_reconnect_after_server_restart(tmp_path: Path, tiny_model: Path,
                                                               server_kind: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/live.wav"
    server = start_server(port, server_kind, tmp_path)
    events = tmp_path / "events.jsonl"
    daemon = Daemon("--model", str(tiny_model), "--input", url, "--cooldown", "1",
                    "--stall-timeout", "5", "--events", str(events))
    try:
        first = daemon.wait_for("DANGER #1 started", 60)
        assert url in daemon.lines[first]
        server.kill()
        server.wait(10)
        lost = daemon.wait_for("reopening in", 30, first)
        daemon.wait_for("cannot open", 30, lost)  # the server is down: retried with backoff
        server = start_server(port, server_kind, tmp_path)
        # "#1" unless the daemon started before ffmpeg listened (its first open failed and
        # counted as a reconnect: seen in CI on a busy machine); after ``lost`` either way
        back = daemon.wait_for("reopened (reconnect #", 60, lost)
        later = daemon.wait_for("started", 60, back)
        assert url in daemon.lines[later]
    finally:
        server.kill()
        code = daemon.stop()
    assert code == 0 and "Traceback" not in daemon.text, daemon.text
    records = ends(events.read_text())
    assert len(records) >= 2 and all(r["source"] == url for r in records)


@needs_ffmpeg
def test_source_that_cannot_reopen_exits_nonzero_in_time(tmp_path: Path,
                                                         tiny_model: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing.wav"
    started = time.monotonic()
    daemon = Daemon("--model", str(tiny_model), "--input", url, "--reopen-timeout", "4")
    code = daemon.proc.wait(60)
    elapsed = time.monotonic() - started
    daemon._reader.join(10)
    assert code == 3, daemon.text
    assert elapsed < 30 and "Traceback" not in daemon.text
    tries = [ln for ln in daemon.lines if "cannot open" in ln]
    assert 2 <= len(tries) <= 4, daemon.text  # 1 s, 2 s, then the last second: backoff
    # never open: "opened", not "reopened"; no ffmpeg addresses ("[tcp @ 0x55bf…]")
    assert "could not be opened within 4 s" in daemon.lines[-2] + daemon.lines[-1]
    assert " @ 0x" not in daemon.text, daemon.text


def test_source_specs() -> None:
    specs = parse_sources(["kitchen=mic", "porch=rtsp://cam/a?x=1", "/data/a=b.wav"], "USB")
    assert [(s.name, s.input, s.device) for s in specs] == [
        ("kitchen", "mic", "USB"), ("porch", "rtsp://cam/a?x=1", "USB"),
        ("input3", "/data/a=b.wav", "USB")]
    specs = parse_sources((), None, {"porch": {"input": "http://x/a"},
                                     "hall": {"input": "mic", "device": "hw:1"}})
    assert [(s.name, s.device) for s in specs] == [("porch", None), ("hall", "hw:1")]
    # an explicit mic is served beside the tables (was: silently dropped); none at all: mic
    specs = parse_sources("mic", None, {"porch": {"input": "http://x/a"}})
    assert [(s.name, s.input) for s in specs] == [("input1", "mic"), ("porch", "http://x/a")]
    assert [s.input for s in parse_sources((), None)] == ["mic"]
    # a mistyped "://" was "no such file", then a restart every 5 s under systemd
    for typo in ("rtsp:/cam.local/live", "porch=rtsp//cam.local/live"):
        with pytest.raises(ValueError, match="did you mean rtsp://cam.local/live"):
            parse_sources(typo, None)


@needs_ffmpeg
def test_a_stream_without_audio_or_with_an_unknown_protocol_says_so(tmp_path: Path,
                                                                    tiny_model: Path) -> None:
    """A camera with its audio off gave ffmpeg's "Output file #0 does not contain any stream"
    at every retry; an unknown protocol (a typo) was retried until --reopen-timeout."""
    video = tmp_path / "video_only.ts"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=5", "-t", "2", "-c:v", "mpeg2video",
                    str(video)], check=True, timeout=60)
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                          "--input", video.as_uri(), "--reopen-timeout", "1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and "it has no audio track" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                          "--input", "htp://127.0.0.1:9/x"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2 and "cannot open" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(
        "edge-detect: error: htp://127.0.0.1:9/x: ffmpeg knows no protocol 'htp'"), res.stderr


def test_an_existing_path_with_an_equals_sign_is_a_path(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "take=2.wav").write_bytes(b"")
    (spec,) = parse_sources(["take=2.wav"], None)
    assert spec.input == "take=2.wav"
    (spec,) = parse_sources(["take=3.wav"], None)  # no such file: NAME=SPEC
    assert (spec.name, spec.input) == ("take", "3.wav")
    with pytest.raises(ValueError, match="unique"):
        parse_sources(["a=mic", "a=-"], None)
    with pytest.raises(ValueError, match="unknown key"):
        parse_sources([], None, {"x": {"input": "mic", "devcie": "y"}})
    with pytest.raises(ValueError, match="stdin"):
        parse_sources(["a=-", "b=-"], None)


def peak_rss_kib(args: list[str], stdin_file: Path) -> tuple[int, str, int]:
    with open(stdin_file, "rb") as stdin:
        res = subprocess.run(procmem.command(*args), stdin=stdin, capture_output=True,
                             timeout=120)
    err, peak = procmem.split(res.stderr.decode())
    return res.returncode, err, peak


def test_two_named_sources_in_one_process(tmp_path: Path, tiny_model: Path) -> None:
    """A watched folder and stdin together: every event names its source; memory ≈ one's."""
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "loud.wav", np.concatenate([hiss(2.0), tone(3.0), hiss(2.0)]), SR)
    pcm = tmp_path / "door.s16"
    (np.concatenate([hiss(4.0), tone(3.0), hiss(1.0), tone(2.0), hiss(4.0)]) * 32767).astype(
        "<i2").tofile(pcm)
    events = tmp_path / "events.jsonl"
    common = ["--model", str(tiny_model), "--rate", str(SR), "--cooldown", "1", "--once"]
    code, err, both = peak_rss_kib([*common, "--input", f"box={d}", "--input", "door=-",
                                    "--events", str(events)], pcm)
    assert code == 0 and "Traceback" not in err, err
    records = ends(events.read_text())
    by_source = sorted(r["source"] for r in records)
    assert by_source == [f"box:{d / 'loud.wav'}", "door"], by_source
    assert "done (box)" in err and "done (door)" in err
    code, err, one = peak_rss_kib([*common, "--input", "-"], pcm)
    assert code == 0, err
    assert both < 1.2 * one, f"two sources {both / 1024:.0f} MB vs one {one / 1024:.0f} MB"


def test_named_sources_from_toml(tmp_path: Path, tiny_model: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    sf.write(d / "a.wav", np.concatenate([hiss(1.0), tone(3.0), hiss(1.0)]), SR)
    conf = tmp_path / "edge.toml"
    conf.write_text(f'model = "{tiny_model}"\nonce = true\nevents = "{tmp_path / "e.jsonl"}"\n'
                    f'[sources.garden]\ninput = "{d}"\n')
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--config", str(conf)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    records = ends((tmp_path / "e.jsonl").read_text())
    assert [r["source"] for r in records] == [f"garden:{d / 'a.wav'}"]


@needs_ffmpeg
@pytest.mark.parametrize("password", ["hunter2", "p@ss:w0rd"])
def test_stream_password_never_logged(tmp_path: Path, tiny_model: Path, password: str) -> None:
    """Also a password with an unencoded '@' (ffmpeg splits at the last one; the part after
    the first '@' was shown)."""
    url = f"rtsp://admin:{password}@127.0.0.1:{free_port()}/cam"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                          "--input", url, "--reopen-timeout", "1"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert password[-5:] not in res.stderr and "admin:***@127.0.0.1" in res.stderr, res.stderr


def test_watchdog_reports_health_changes_once_and_backs_off() -> None:
    """Two failed opens, then a stream that ends, then stop: health goes unhealthy once (not
    per retry), healthy again on reopen; the delays grow 1 s, 2 s."""
    from datetime import UTC, datetime

    from edge_runtime.audio import Decoded
    from edge_runtime.live import Supervisor
    from edge_runtime.sources import Stream

    stop = threading.Event()
    attempts: list[float] = []
    reports: list[tuple[bool, str]] = []

    def opener(_reopening: bool) -> Stream:
        attempts.append(time.monotonic())
        if len(attempts) <= 2:
            raise RuntimeError(f"device gone (try {len(attempts)})")
        blocks = iter([np.full(SR // 10, 0.1 * i, np.float32) for i in range(3)])
        return Stream("src", False, datetime.now(UTC), blocks, Decoded())

    def run(stream: Stream) -> None:
        for _ in stream.blocks:
            pass
        stop.set()

    sup = Supervisor("src", opener, run, stop, SR, reopen_timeout_s=30,
                     on_health=lambda _src, ok, why: reports.append((ok, why)))
    assert sup() is True
    assert len(attempts) == 3
    assert 0.8 <= attempts[1] - attempts[0] <= 1.5 and 1.8 <= attempts[2] - attempts[1] <= 2.5
    assert [ok for ok, _ in reports] == [False, True]
    assert "device gone (try 1)" in reports[0][1]


@needs_ffmpeg
def test_a_recording_served_over_http_is_read_once(tmp_path: Path, tiny_model: Path) -> None:
    """A finite WAV on a web server arrives faster than real time and ends: it is a recording,
    read once (one event, exit 0), not a live stream re-read on every "reconnect"."""
    sf.write(tmp_path / "clip.wav", np.concatenate([hiss(3.0), tone(3.0), hiss(3.0)]), SR)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    events = tmp_path / "events.jsonl"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the server accepts connections
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        daemon = Daemon("--model", str(tiny_model), "--input",
                        f"http://127.0.0.1:{port}/clip.wav", "--events", str(events))
        code = daemon.proc.wait(60)  # no --once: it still ends, the recording being over
        daemon._reader.join(10)
    finally:
        server.kill()
        server.wait(10)
    assert code == 0, daemon.text
    assert "recording read to its end" in daemon.text and "reopen" not in daemon.text
    assert len(ends(events.read_text())) == 1, daemon.text


def test_a_source_down_from_the_start_and_a_stop_while_down() -> None:
    """A camera down when edge-detect starts is "opened at last" (not "reopened (reconnect
    #1)": it never was open); a stop while a source is down reports no healthy input (was:
    "stopped" counted as healthy, so Home Assistant read "Input healthy" just before the
    node went offline)."""
    import logging
    from datetime import UTC, datetime

    from edge_runtime.audio import Decoded
    from edge_runtime.live import Supervisor
    from edge_runtime.sources import Stream

    stop = threading.Event()
    reports: list[bool] = []
    attempts: list[int] = []

    def opener(_reopening: bool) -> Stream:
        attempts.append(1)
        if len(attempts) == 1 or len(attempts) >= 3:
            raise RuntimeError("connection refused")
        blocks = iter([np.zeros(SR // 10, np.float32)])
        return Stream("cam", False, datetime.now(UTC), blocks, Decoded())

    def run(stream: Stream) -> None:
        for _ in stream.blocks:
            pass

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("edge-detect").addHandler(handler)
    sup = Supervisor("cam", opener, run, stop, SR, reopen_timeout_s=60,
                     on_health=lambda _src, ok, _why: reports.append(ok))
    thread = threading.Thread(target=sup)
    thread.start()
    deadline = time.monotonic() + 20
    while len(attempts) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()  # while the source is down again
    thread.join(15)
    logging.getLogger("edge-detect").removeHandler(handler)
    assert not thread.is_alive() and len(attempts) >= 3
    assert "cam: opened at last" in records and not any("reopened" in r for r in records)
    assert reports == [False, True, False], reports  # down, up, down — and nothing at the stop
