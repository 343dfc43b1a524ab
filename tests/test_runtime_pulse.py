"""A real audio path: PulseAudio null sink → its monitor source → PortAudio/ALSA "pulse" device →
``edge-detect --input mic --device pulse`` → an event. Skips when PulseAudio is not installed
(Debian: apt-get install -y pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import ended_events
from tests.runtime_model import build_tiny_model, hiss, tone

NEEDED = ("pulseaudio", "pactl", "paplay")


def start_pulse(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Start a per-test PulseAudio with a null sink whose monitor is the default source."""
    start = subprocess.run(["pulseaudio", "-D", "-n", "--system=false", "--exit-idle-time=-1",
                            "--disallow-exit", "--load=module-native-protocol-unix",
                            "--load=module-null-sink sink_name=edgetest"],
                           env=env, capture_output=True, text=True, timeout=30)
    if start.returncode == 0:
        for cmd in (["pactl", "set-default-sink", "edgetest"],
                    ["pactl", "set-default-source", "edgetest.monitor"]):
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=30)
    return start


@pytest.fixture
def pulse_env(tmp_path: Path):
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install pulseaudio "
                    "pulseaudio-utils libportaudio2 libasound2-plugins)")
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH":
           str(runtime / "pulse"), "HOME": str(tmp_path)}
    env.pop("PULSE_SERVER", None)
    start = start_pulse(env)
    if start.returncode != 0:
        pytest.skip(f"pulseaudio would not start here: {start.stderr.strip()[-200:]}")
    try:
        yield env
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)


@pytest.mark.slow
def test_mic_capture_through_pulseaudio_logs_an_event(pulse_env, tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    rate = 44100
    clip = np.concatenate([hiss(1.0, sr=rate), tone(4.0, sr=rate), hiss(1.0, sr=rate)])
    sf.write(tmp_path / "play.wav", clip, rate)
    events = tmp_path / "events.jsonl"
    listed = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--list-devices"],
                            env=pulse_env, capture_output=True, text=True, timeout=60)
    if "pulse" not in listed.stdout:
        pytest.skip(f"PortAudio sees no 'pulse' device (libasound2-plugins?): {listed.stdout}")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                             "--input", "mic", "--device", "pulse", "--events", str(events),
                             "--cooldown", "1"], env=pulse_env, stderr=subprocess.PIPE)
    try:
        err = b""
        while b"listening on" not in err and proc.poll() is None:
            err += proc.stderr.read1(4096)
        assert b"listening on" in err, err.decode()
        subprocess.run(["paplay", str(tmp_path / "play.wav")], env=pulse_env, check=True,
                       timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (events.exists() and events.read_text()):
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        err += proc.communicate(timeout=60)[1]
    text = err.decode()
    assert proc.returncode == 0 and "Traceback" not in text, text
    assert "DANGER #1 started" in text
    recs = ended_events(events)
    assert len(recs) == 1 and recs[0]["source"].startswith("pulse")
    assert recs[0]["peak_probability"] > 0.9


def _collect(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    def read() -> None:
        for raw in proc.stderr:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def _wait_line(lines: list[str], text: str, timeout: float, after: int = 0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in range(after, len(lines)):
            if text in lines[i]:
                return i
        time.sleep(0.1)
    pytest.fail(f"no line with {text!r} within {timeout} s:\n" + "\n".join(lines))


def _start_mic_daemon(pulse_env: dict[str, str], model: Path, *extra: str) -> subprocess.Popen:
    listed = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--list-devices"],
                            env=pulse_env, capture_output=True, text=True, timeout=60)
    if "pulse" not in listed.stdout:
        pytest.skip(f"PortAudio sees no 'pulse' device (libasound2-plugins?): {listed.stdout}")
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                             "--input", "mic", "--device", "pulse", "--cooldown", "1",
                             "--stall-timeout", "3", *extra], env=pulse_env,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
def test_lost_pulseaudio_exits_nonzero_within_reopen_timeout(pulse_env,
                                                             tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    proc = _start_mic_daemon(pulse_env, model, "--reopen-timeout", "10")
    lines: list[str] = []
    reader = _collect(proc, lines)
    try:
        _wait_line(lines, "listening on", 60)
        subprocess.run(["pulseaudio", "--kill"], env=pulse_env, timeout=30)
        killed = time.monotonic()
        code = proc.wait(60)
        elapsed = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(10)
    text = "\n".join(lines)
    assert code == 3 and "Traceback" not in text, text
    assert elapsed < 3 + 1 + 10 + 5, elapsed  # stall detection + first retry + timeout
    assert len([ln for ln in lines if "cannot open" in ln]) >= 2, text
    assert "could not be reopened within 10 s" in text


@pytest.mark.slow
def test_pulseaudio_back_in_time_capture_resumes(pulse_env, tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    rate = 44100
    sf.write(tmp_path / "play.wav", np.concatenate([hiss(1.0, sr=rate), tone(4.0, sr=rate),
                                                    hiss(1.0, sr=rate)]), rate)
    events = tmp_path / "events.jsonl"
    proc = _start_mic_daemon(pulse_env, model, "--reopen-timeout", "60", "--events",
                             str(events))
    lines: list[str] = []
    reader = _collect(proc, lines)
    try:
        _wait_line(lines, "listening on", 60)
        subprocess.run(["pulseaudio", "--kill"], env=pulse_env, timeout=30)
        retry = _wait_line(lines, "cannot open", 30)
        assert start_pulse(pulse_env).returncode == 0
        back = _wait_line(lines, "reopened (reconnect #1)", 40, retry)
        assert "listening on" in "\n".join(lines[retry:])
        subprocess.run(["paplay", str(tmp_path / "play.wav")], env=pulse_env, check=True,
                       timeout=60)
        _wait_line(lines, "DANGER #1 started", 30, back)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        reader.join(10)
    text = "\n".join(lines)
    assert code == 0 and "Traceback" not in text, text
