"""Event lifecycle end to end: a smoke alarm that keeps sounding is reported when it starts, not
when it stops. Raw PCM goes to ``edge-detect --input -`` at real-time pace (tiny model: loud =
danger)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime_model import hiss

RATE = 48_000


def smoke_alarm(seconds: float, sr: int = RATE) -> np.ndarray:
    """Temporal-3 pattern of a 3 kHz beep: (0.5 s on, 0.5 s off) ×3, then 1.5 s quiet."""
    t = np.arange(int(seconds * sr)) / sr
    phase = t % 4.0
    on = (phase < 2.5) & ((phase % 1.0) < 0.5)
    return (0.5 * np.sin(2 * np.pi * 3000.0 * t) * on).astype(np.float32)


@pytest.mark.slow  # > 20 s: 60 s of audio at real-time pace
def test_sixty_second_alarm_starts_within_a_second_of_audio(tiny_model: Path,
                                                            tmp_path: Path) -> None:
    quiet_s, alarm_s = 5.0, 60.0
    audio = np.concatenate([hiss(quiet_s, sr=RATE), smoke_alarm(alarm_s)])
    pcm = (audio * 32767).astype("<i2").tobytes()
    events = tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                             "--input", "-", "--rate", str(RATE), "--events", str(events)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    step = RATE // 10 * 2  # 0.1 s of s16 mono
    written_s, start_seen_at = 0.0, None
    t0 = time.monotonic()
    try:
        for i in range(0, len(pcm), step):
            proc.stdin.write(pcm[i:i + step])
            proc.stdin.flush()
            written_s += len(pcm[i:i + step]) / 2 / RATE
            time.sleep(max(0.0, t0 + written_s - time.monotonic()))  # real-time pace
            if start_seen_at is None and events.exists() and events.read_text():
                start_seen_at = written_s
        lines_before_end = events.read_text().splitlines()
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        proc.kill()
    reader.join(10)
    text = b"".join(err).decode()
    assert proc.returncode == 0 and "Traceback" not in text, text
    # The first window holding the alarm ends at 6 s of audio (1 s chunks, alarm from 5 s); it
    # decides, and min_duration (1 s) is met by that one window.
    decided_s = quiet_s + 1.0
    assert start_seen_at is not None, text
    delay = start_seen_at - decided_s
    print(f"start line on disk after {start_seen_at:.1f} s of audio: {delay:+.1f} s after the "
          f"deciding window (alarm {alarm_s:.0f} s)")
    assert delay <= 1.0, (start_seen_at, text)
    # while the alarm kept sounding only the start was written
    assert [json.loads(x)["state"] for x in lines_before_end] == ["start"]
    start, end = [json.loads(x) for x in events.read_text().splitlines()]
    assert (start["state"], end["state"]) == ("start", "end") and start["id"] == end["id"]
    assert end["duration_s"] >= alarm_s - 1.5


class Recorder:
    """A sink keeping every record it gets (the Sink protocol, nothing else)."""

    def __init__(self) -> None:
        self.records: list = []

    def on_start(self, record) -> None:
        self.records.append(record)

    on_update = on_end = on_start

    def close(self) -> None:
        pass


def test_runner_fills_the_class_from_the_peak_window_label(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    """Models with named classes give their WindowScores a ``label``; the record's ``class``
    comes from the event's peak window (absent label: no class)."""
    import soundfile as sf

    from edge_runtime.daemon import Runner
    from edge_runtime.detector import Detector
    from edge_runtime.events import EventConfig
    from edge_runtime.lifecycle import Sink
    from edge_runtime.sources import file_stream
    from tests.runtime_model import SR, tone

    class Labelled:
        def __init__(self, stream) -> None:
            self.inner = stream

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def push(self, block):
            return [self._label(s) for s in self.inner.push(block)]

        def finish(self):
            return [self._label(s) for s in self.inner.finish()]

        @staticmethod
        def _label(score):
            score.label = "smoke_alarm" if score.decision > 0.5 else None
            return score

    detector = Detector(tiny_model, provider="cpu")
    plain_stream = detector.stream
    sf.write(tmp_path / "a.wav", np.concatenate([hiss(5.0, sr=SR), tone(6.0)]), SR)
    for labelled, expected in ((True, "smoke_alarm"), (False, None)):
        detector.stream = (lambda: Labelled(plain_stream())) if labelled else plain_stream
        sink = Recorder()
        assert isinstance(sink, Sink)
        runner = Runner(detector, EventConfig(threshold=0.5, update_every_s=2.0), [sink])
        runner.run_stream(file_stream(tmp_path / "a.wav", SR))
        states = [r.state for r in sink.records]
        assert states[0] == "start" and states[-1] == "end" and "update" in states
        assert {r.class_name for r in sink.records} == {expected}
        assert len({r.id for r in sink.records}) == 1
        assert ("class" in sink.records[-1].to_dict()) == labelled
