"""A real audio path: PulseAudio null sink → its monitor source → PortAudio/ALSA "pulse" device →
``edge-detect --input mic --device pulse`` → an event. Skips when PulseAudio is not installed
(Debian: apt-get install -y pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import ended_events
from tests.runtime_model import build_tiny_model, hiss, tone

NEEDED = ("pulseaudio", "pactl", "paplay")


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
    start = subprocess.run(["pulseaudio", "-D", "-n", "--system=false", "--exit-idle-time=-1",
                            "--disallow-exit", "--load=module-native-protocol-unix",
                            "--load=module-null-sink sink_name=edgetest"],
                           env=env, capture_output=True, text=True, timeout=30)
    if start.returncode != 0:
        pytest.skip(f"pulseaudio would not start here: {start.stderr.strip()[-200:]}")
    try:
        for cmd in (["pactl", "set-default-sink", "edgetest"],
                    ["pactl", "set-default-source", "edgetest.monitor"]):
            subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=30)
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
