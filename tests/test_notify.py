"""Push notifications against a real local HTTP server (stdlib, started by the test): ntfy headers,
webhook JSON, per-class cooldown, retries, never blocking, and the health notification."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import soundfile as sf

from edge_runtime.lifecycle import EventRecord, Health
from edge_runtime.notify import Notifier, parse_target, priority
from tests.runtime_model import SR, build_tiny_model, tone


class Server:
    """Records every POST; ``fail`` first requests answer 503; ``delay_s`` slows each answer."""

    def __init__(self, fail: int = 0, delay_s: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay_s)
                failing = outer.fail > 0
                outer.fail -= failing
                outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": body, "status": 503 if failing else 200})
                self.send_response(503 if failing else 200)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def ok(self) -> list[dict]:
        return [r for r in self.requests if r["status"] == 200]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def record(cls: str | None, n: int = 1) -> EventRecord:
    return EventRecord(id=f"id{n}", state="start", index=n, start=f"2026-01-01T00:00:0{n}Z",
                       end="2026-01-01T00:00:09Z", duration_s=1.0, peak_probability=0.93,
                       mean_probability=0.9, windows=1, source="mic", model_sha256="ab" * 32,
                       class_name=cls, tags=[("Smoke detector, smoke alarm", 0.91),
                                             ("Beep, bleep", 0.4)])


def test_targets_and_priorities() -> None:
    assert parse_target("https://ntfy.sh/home-alerts").kind == "ntfy"
    assert parse_target("ntfy+http://10.0.0.2:8080/alerts").url == "http://10.0.0.2:8080/alerts"
    assert parse_target("http://hooks.local/x").kind == "webhook"
    with pytest.raises(ValueError, match="--notify"):
        parse_target("ftp://x/y")
    assert priority("smoke_alarm") == priority("glass_break") == "urgent"
    assert priority("dog_barking") == "default" and priority("danger") == "high"


def test_ntfy_and_webhook_with_cooldown_and_retry() -> None:
    server = Server(fail=1)  # the first POST answers 503: retried
    try:
        note = Notifier([f"ntfy+{server.url}/alerts", f"{server.url}/hook"], cooldown_s=60,
                        backoff_s=0.1, host="kitchen-pi")
        note.on_start(record("smoke_alarm", 1))
        note.on_start(record("smoke_alarm", 2))  # same class within the cooldown: not sent
        note.on_start(record(None, 3))  # a model without classes: "danger"
        note.close()
    finally:
        server.close()
    ok = server.ok()
    assert len(server.requests) == 5 and len(ok) == 4
    ntfy = [r for r in ok if r["path"] == "/alerts"]
    hooks = [json.loads(r["body"]) for r in ok if r["path"] == "/hook"]
    assert [r["headers"]["Priority"] for r in ntfy] == ["urgent", "high"]
    assert ntfy[0]["headers"]["Title"].startswith("Smoke alarm") and "kitchen-pi" in \
        ntfy[0]["headers"]["Title"]
    assert "smoke_alarm" in ntfy[0]["headers"]["Tags"]
    text = ntfy[0]["body"].decode()
    assert "Why: Smoke detector, smoke alarm 0.91, Beep, bleep 0.40" in text
    assert [h["event"]["id"] for h in hooks] == ["id1", "id3"]
    assert hooks[0]["event"]["class"] == "smoke_alarm" and "class" not in hooks[1]["event"]
    assert hooks[0]["priority"] == "urgent" and hooks[0]["kind"] == "event"


def test_a_slow_server_never_blocks_detection() -> None:
    server = Server(delay_s=1.0)
    try:
        note = Notifier([f"{server.url}/hook"], cooldown_s=0, drain_timeout_s=10)
        t0 = time.perf_counter()
        for i in range(5):
            note.on_start(record(f"class_{i}", i))
        queued_in = time.perf_counter() - t0
        note.close()
    finally:
        server.close()
    assert queued_in < 0.5, queued_in  # five 1 s deliveries queued, none awaited
    assert len(server.ok()) == 5


def test_unhealthy_detector_is_notified_once_per_change(server: Server) -> None:
    note = Notifier([f"{server.url}/hook"])
    note.on_health(Health("mic", True))  # healthy from the start: nothing to say
    note.on_health(Health("mic", False, "input flat for 10 s"))
    note.on_health(Health("mic", False, "input flat for 10 s"))
    note.on_health(Health("mic", True))
    note.close()
    bodies = [json.loads(r["body"]) for r in server.ok()]
    assert [b["health"]["healthy"] for b in bodies] == [False, True]
    assert "input flat" in bodies[0]["message"] and bodies[0]["kind"] == "health"


def test_cli_notifies_a_webhook_for_a_danger_file(server: Server, tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "model")
    sf.write(tmp_path / "alarm.wav", tone(6.0), SR)
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", str(tmp_path / "alarm.wav"), "--notify",
                          f"{server.url}/hook"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (body,) = [json.loads(r["body"]) for r in server.ok()]
    assert body["event"]["state"] == "start" and body["event"]["source"].endswith("alarm.wav")
    assert "Why: Loud noise" in body["message"]


def test_dead_input_on_stdin_is_notified_then_its_recovery(server: Server,
                                                           tmp_path: Path) -> None:
    import numpy as np

    model = build_tiny_model(tmp_path / "model")
    pcm = np.concatenate([np.zeros(12 * SR, np.float32), tone(6.0)]).astype("<f4").tobytes()
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", "-", "--rate", str(SR), "--format", "f32le",
                          "--notify", f"{server.url}/hook"], input=pcm, capture_output=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    bodies = [json.loads(r["body"]) for r in server.ok()]
    kinds = [(b["kind"], b.get("health", {}).get("healthy")) for b in bodies]
    assert kinds == [("health", False), ("health", True), ("event", None)], bodies
    assert "flat" in bodies[0]["health"]["problem"]
