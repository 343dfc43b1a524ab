"""``--monitor``: /metrics in Prometheus text format and /live JSON, read over real HTTP from a
running ``edge-detect`` fed on stdin (tiny model: loud = danger)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from edge_runtime.lifecycle import Hop
from edge_runtime.monitor import Monitor
from tests.runtime_model import SR, hiss, tone


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def parse_metrics(text: str) -> dict[str, float]:
    """``{name{labels}: value}``; every sample line must follow a # TYPE of its family."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert re.fullmatch(r"[a-z_]+(\{[a-z_]+=\"[^\"]*\"\})?", name), line
            assert name.split("{")[0] in typed, line
            out[name] = float(value)
    return out


def hop(p: float, in_event: bool = False) -> Hop:
    return Hop(source="mic", time="2026-01-01T00:00:01.000Z", offset_s=1.0, p_danger=p,
               p_window=p, threshold=0.5, top=[("smoke_alarm", p)], level_dbfs=-20.0, rtf=0.05,
               in_event=in_event)


def test_near_misses_are_the_hops_just_below_the_threshold() -> None:
    mon = Monitor(port=0, keep=3)
    try:
        for p in (0.1, 0.35, 0.45, 0.9, 0.45):
            mon.on_hop(hop(p, in_event=p > 0.5))
        live = json.loads(get(f"http://127.0.0.1:{mon.port}/live"))
        metrics = parse_metrics(get(f"http://127.0.0.1:{mon.port}/metrics"))
        page = get(f"http://127.0.0.1:{mon.port}/")
    finally:
        mon.close()
    assert [h["p_danger"] for h in live["hops"]] == [0.45, 0.9, 0.45]  # the last 3
    assert [h["p_danger"] for h in live["near_misses"]] == [0.35, 0.45, 0.45]
    assert live["hops"][0]["top"] == [["smoke_alarm", 0.45]]
    assert metrics["edge_detect_hops_total"] == 5
    assert metrics["edge_detect_near_misses_total"] == 3
    assert "fetch('live')" in page


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_running_daemon_serves_metrics_and_live(tiny_model: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model", str(tiny_model),
                             "--input", "-", "--rate", str(SR), "--format", "f32le", "--monitor",
                             "--monitor-port", str(port)],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        audio = [hiss(6.0), tone(4.0, amp=0.5)]
        for part in audio:
            proc.stdin.write(part.astype("<f4").tobytes())
            proc.stdin.flush()
        metrics: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                metrics = parse_metrics(get(f"http://127.0.0.1:{port}/metrics"))
            except OSError:
                metrics = {}
            if metrics.get("edge_detect_hops_total", 0) >= 6:  # windows ending at 5 … 10 s
                break
            time.sleep(0.2)
        live = json.loads(get(f"http://127.0.0.1:{port}/live"))
    finally:
        proc.stdin.close()
        proc.wait(60)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert metrics['edge_detect_events_total{class="danger"}'] == 1, metrics
    assert metrics["edge_detect_hops_total"] == 6
    # a 0.5-amplitude sine is -9 dBFS RMS; the last hop is all tone
    assert metrics["edge_detect_input_level_dbfs"] == pytest.approx(-9.0, abs=0.5)
    assert 0 < metrics["edge_detect_realtime_factor"] < 1
    assert metrics["edge_detect_p_danger"] > 0.9 and metrics["edge_detect_input_healthy"] == 1
    assert live["hops"][0]["p_danger"] < 0.5 < live["hops"][-1]["p_danger"]
    assert live["hops"][-1]["in_event"] is True and live["threshold"] == 0.5
