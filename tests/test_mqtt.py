"""MQTT sink against a real Mosquitto broker started by the test on a free loopback port
(Debian ``mosquitto``, installed by ``.ci/setup``): Home Assistant discovery, availability,
event messages, and a broker outage with no event lost. Tiny model: loud = danger."""

from __future__ import annotations

import getpass
import json
import os
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

from tests.helpers import ended_events, wait_until
from tests.runtime_model import SR, hiss, tone

paho = pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (paho-mqtt) is absent")

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="Debian mosquitto is not installed "
                                                          "(.ci/setup installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto -c conf`` on 127.0.0.1:port, persistence in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                             f"persistence true\npersistence_location {directory}/\n"
                             f"user {getpass.getuser()}\nlog_dest stderr\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistence db
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


class Watcher:
    """A paho client recording (topic, payload, retain) of everything under ``topics``."""

    def __init__(self, port: int, topics: list[str], client_id: str = "",
                 clean: bool = True) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        self.client.on_connect = lambda c, *_: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, m.payload.decode(), bool(m.retain)))
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def wait(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.messages):
                return True
            time.sleep(0.05)
        return predicate(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def node() -> str:
    from edge_runtime.mqtt import slug

    return slug(socket.gethostname())


def edge_detect(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge_runtime.cli", *args]


def events_of(messages: list[tuple[str, str, bool]]) -> list[dict]:
    return [json.loads(p) for t, p, _ in messages if t.endswith("/event")]


def test_once_publishes_discovery_availability_and_one_event(broker: Broker, tiny_model: Path,
                                                             tmp_path: Path) -> None:
    inbox = tmp_path / "clips"
    inbox.mkdir()
    sf.write(inbox / "danger.wav", tone(6.0), SR)
    sf.write(inbox / "safe.wav", hiss(6.0), SR)
    base = f"edge-detect/{node()}"
    live = Watcher(broker.port, [f"{base}/#"])
    assert live.subscribed.wait(10)
    res = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox), "--once",
                                     "--settle", "0", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                     "--mqtt-spool", str(tmp_path / "spool")),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert live.wait(lambda m: (f"{base}/status", "offline", False) in m, 10), live.messages
    live.close()
    status = [p for t, p, _ in live.messages if t == f"{base}/status"]
    assert status[-2:] == ["online", "offline"], status
    events = events_of(live.messages)
    assert [e["state"] for e in events] == ["start", "end"], events
    assert {e["event_type"] for e in events} == {"danger"}
    assert len({e["id"] for e in events}) == 1
    assert all(e["source"].endswith("danger.wav") for e in events)  # none for safe.wav
    assert events[1]["score"] > 0.9 and events[1]["end"] > events[1]["start"]
    states = [p for t, p, _ in live.messages if t == f"{base}/class/danger"]
    assert states == ["OFF", "ON", "OFF"]  # OFF at start: no event is open

    # a client arriving later gets the retained discovery configs and the availability
    late = Watcher(broker.port, ["homeassistant/#", f"{base}/status"])
    assert late.wait(lambda m: len(m) >= 9, 10), late.messages
    time.sleep(0.3)
    late.close()
    configs = {t: json.loads(p) for t, p, r in late.messages if t.endswith("/config") and r}
    kinds = {t.split("/")[1] for t in configs}
    assert {"event", "binary_sensor", "sensor", "switch"} <= kinds, sorted(configs)
    for topic, cfg in configs.items():
        assert topic.startswith(f"homeassistant/{topic.split('/')[1]}/{node()}/")
        assert cfg["unique_id"].startswith("edge_detect_") and cfg["device"]["identifiers"]
        # sound entities are also unavailable while no input is heard (<base>/listening)
        assert (cfg.get("availability_topic") == f"{base}/status"
                or cfg["availability"][0] == {"topic": f"{base}/status"}), cfg
    (event_cfg,) = [c for t, c in configs.items() if t.split("/")[1] == "event"]
    assert event_cfg["event_types"] == ["danger"]
    assert event_cfg["state_topic"] == f"{base}/clips/event"
    danger = configs[f"homeassistant/binary_sensor/{node()}/danger/config"]
    assert danger["device_class"] == "safety" and danger["off_delay"] >= 30
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    assert (f"{base}/status", "offline", True) in late.messages


def test_safe_clip_alone_publishes_no_event(broker: Broker, tiny_model: Path,
                                            tmp_path: Path) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    sf.write(inbox / "safe.wav", hiss(6.0), SR)
    live = Watcher(broker.port, ["edge-detect/#"])
    assert live.subscribed.wait(10)
    res = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox), "--once",
                                     "--settle", "0", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                     "--mqtt-spool", str(tmp_path / "spool")),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert live.wait(lambda m: any(p == "offline" for _, p, _ in m), 10)
    live.close()
    assert [p for t, p, _ in live.messages if t.endswith("/status")] == ["online", "offline"]
    assert events_of(live.messages) == []


def test_a_class_left_on_by_a_killed_run_is_cleared_at_start(broker: Broker, tiny_model: Path,
                                                             tmp_path: Path) -> None:
    """A run killed mid-event leaves its class sensors ON (retained): Home Assistant would read
    a live alarm after every restart. The next run sets them OFF, under its --mqtt-node."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    sf.write(inbox / "safe.wav", hiss(6.0), SR)
    stale = "edge-detect/kitchen/class/danger"
    setter = paho.Client(paho.CallbackAPIVersion.VERSION2)
    setter.connect("127.0.0.1", broker.port)
    setter.loop_start()
    setter.publish(stale, "ON", qos=1, retain=True).wait_for_publish(10)
    setter.disconnect()
    setter.loop_stop()
    res = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox), "--once",
                                     "--settle", "0", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                     "--mqtt-node", "Kitchen", "--update-every", "0",
                                     "--mqtt-spool", str(tmp_path / "spool")),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    after = Watcher(broker.port, ["edge-detect/#", "homeassistant/#"])
    assert after.wait(lambda m: any(t == stale for t, _, _ in m), 10)
    after.close()
    assert [p for t, p, r in after.messages if t == stale] == ["OFF"]
    configs = {t: json.loads(p) for t, p, _ in after.messages
               if t.startswith("homeassistant/binary_sensor/kitchen/")}
    assert configs and all("off_delay" not in c for c in configs.values())  # --update-every 0


@pytest.mark.parametrize("prefix", ["home#", "a/+/b", "/"])
def test_a_discovery_prefix_that_is_no_topic_is_refused_in_one_line(prefix: str,
                                                                    tmp_path: Path) -> None:
    res = subprocess.run(edge_detect("--model", str(tmp_path), "--input", "x.wav",
                                     "--mqtt", "mqtt://127.0.0.1:1",
                                     "--mqtt-discovery-prefix", prefix),
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--mqtt-discovery-prefix" in lines[0], res.stderr


@pytest.mark.slow  # > 20 s: waits out a broker outage
def test_event_decided_while_the_broker_is_down_arrives_when_it_is_back(
        tmp_path: Path, tiny_model: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    # a persistent session (clean_session False): the broker keeps its QoS 1 messages
    watcher = Watcher(broker.port, ["edge-detect/+/+/event"], client_id="ha", clean=False)
    assert watcher.subscribed.wait(10)
    watcher.close()
    broker.stop()

    inbox, spool = tmp_path / "watched", tmp_path / "spool"
    inbox.mkdir()
    jsonl = tmp_path / "events.jsonl"
    proc = subprocess.Popen(edge_detect("--model", str(tiny_model), "--input", str(inbox),
                                        "--settle", "0.3", "--events", str(jsonl),
                                        "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                        "--mqtt-spool", str(spool)),
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        sf.write(tmp_path / "alarm.wav", tone(6.0), SR)
        os.replace(tmp_path / "alarm.wav", inbox / "alarm.wav")  # dropped in complete
        dropped = time.monotonic()
        deadline = dropped + 30
        while time.monotonic() < deadline and not (jsonl.exists() and ended_events(jsonl)):
            time.sleep(0.1)
        assert ended_events(jsonl), "the event was not decided"
        spooled = sorted(p.name for p in spool.rglob("*.json"))
        assert len(spooled) >= 3, spooled  # start, ON, last_event, end, OFF wait on disk
        time.sleep(max(0.0, dropped + 15.0 - time.monotonic()))
        broker.start()  # 15 s later
        watcher = Watcher(broker.port, ["edge-detect/+/+/event"], client_id="ha", clean=False)
        got = watcher.wait(lambda m: len(events_of(m)) >= 2, 40)
        watcher.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
        broker.stop()
    assert got, (watcher.messages, err)
    events = events_of(watcher.messages)
    assert [e["state"] for e in events] == ["start", "end"], events
    assert events[0]["source"].endswith("alarm.wav") and events[0]["id"] == events[1]["id"]
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "unreachable" in err
    assert not list(spool.rglob("*.json"))  # all delivered, nothing left behind


def test_set_topic_pauses_and_resumes_detection(broker: Broker, tiny_model: Path,
                                                tmp_path: Path) -> None:
    """Also: discovery is republished when Home Assistant announces itself, and a long event
    sends updates between its start and end."""
    base = f"edge-detect/{node()}"
    jsonl = tmp_path / "events.jsonl"
    watcher = Watcher(broker.port, [f"{base}/detection", f"{base}/stdin/event",
                                    "homeassistant/+/+/+/config"])
    proc = subprocess.Popen(edge_detect("--model", str(tiny_model), "--input", "-", "--rate",
                                        str(SR), "--format", "f32le", "--events", str(jsonl),
                                        "--update-every", "2",
                                        "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                        "--mqtt-spool", str(tmp_path / "spool")),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    loud = tone(8.0).astype("<f4").tobytes()
    try:
        assert watcher.wait(lambda m: (f"{base}/detection", "ON") in [x[:2] for x in m], 30)
        configs = [t for t, _, _ in watcher.messages if t.endswith("/config")]
        watcher.messages.clear()
        watcher.client.publish("homeassistant/status", "online", qos=1)
        assert watcher.wait(lambda m: sorted(t for t, _, _ in m) == sorted(configs), 10), \
            watcher.messages
        watcher.messages.clear()
        watcher.client.publish(f"{base}/set", "pause", qos=1)
        assert watcher.wait(lambda m: m and m[-1][:2] == (f"{base}/detection", "OFF"), 10)
        proc.stdin.write(loud)
        proc.stdin.flush()
        time.sleep(2.0)  # 8 s of audio read and dropped
        assert not jsonl.exists() or jsonl.read_text() == ""
        watcher.client.publish(f"{base}/set", "ON", qos=1)
        assert watcher.wait(lambda m: m[-1][:2] == (f"{base}/detection", "ON"), 10)
        proc.stdin.write(loud)
        proc.stdin.flush()
        assert watcher.wait(lambda m: len(events_of(m)) >= 1, 20), watcher.messages
        time.sleep(1.0)
    finally:
        proc.stdin.close()
        proc.wait(60)
        err = proc.stderr.read().decode()
        watcher.wait(lambda m: any(e["state"] == "end" for e in events_of(m)), 5)
        watcher.close()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "detection paused" in err and "detection resumed" in err
    (rec,) = ended_events(jsonl)
    assert rec["duration_s"] <= 9.0  # only the audio after the resume
    states = [e["state"] for e in events_of(watcher.messages)]
    assert states[0] == "start" and states[-1] == "end" and "update" in states, states


def make_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "1", "-subj", "/CN=edge-detect test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "1", "-extfile", "san.ext")
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI absent")
def test_mqtts_with_a_private_ca(tmp_path: Path, tiny_model: Path) -> None:
    broker = Broker(tmp_path / "broker")
    ca, cert, key = make_tls(broker.dir)
    with open(broker.conf, "a") as conf:
        conf.write(f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    inbox = tmp_path / "in"
    inbox.mkdir()
    sf.write(inbox / "danger.wav", tone(6.0), SR)
    try:
        watcher = Watcher.__new__(Watcher)
        watcher.messages, watcher.subscribed = [], threading.Event()
        client = paho.Client(paho.CallbackAPIVersion.VERSION2)
        client.tls_set(ca_certs=str(ca))
        client.on_connect = lambda c, *_: c.subscribe("edge-detect/#", 1)
        client.on_subscribe = lambda *_: watcher.subscribed.set()
        client.on_message = lambda _c, _u, m: watcher.messages.append(
            (m.topic, m.payload.decode(), bool(m.retain)))
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        watcher.client = client
        assert watcher.subscribed.wait(10)
        url = f"mqtts://127.0.0.1:{broker.port}"
        res = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox),
                                         "--once", "--settle", "0", "--mqtt", url, "--mqtt-ca",
                                         str(ca), "--mqtt-spool", str(tmp_path / "spool")),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert watcher.wait(lambda m: len(events_of(m)) == 2, 10), (watcher.messages, res.stderr)
        watcher.close()
        bad = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox),
                                         "--once", "--mqtt", url, "--mqtt-ca",
                                         str(tmp_path / "missing.crt")),
                             capture_output=True, text=True, timeout=60)
        last = bad.stderr.strip().splitlines()[-1]
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert last.startswith("edge-detect: error: --mqtt-ca") and "missing.crt" in last
        plain = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox),
                                           "--once", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                           "--mqtt-ca", str(ca)),
                               capture_output=True, text=True, timeout=60)
        assert plain.returncode == 2 and "only used with TLS" in plain.stderr, plain.stderr
        # a CA that did not sign the broker's certificate: the log names TLS, not "unreachable"
        other = tmp_path / "other"
        other.mkdir()
        other_ca, _, _ = make_tls(other)
        wrong = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox),
                                           "--once", "--settle", "0", "--mqtt", url,
                                           "--mqtt-ca", str(other_ca),
                                           "--mqtt-spool", str(tmp_path / "spool2")),
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 0 and "Traceback" not in wrong.stderr, wrong.stderr
        assert "TLS failed (certificate verify failed" in wrong.stderr, wrong.stderr
        assert "unreachable" not in wrong.stderr
    finally:
        broker.stop()


def test_spool_is_bounded_ordered_and_survives_a_restart(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from edge_runtime.mqtt import Spool

    spool = Spool(tmp_path, limit=3)
    for i in range(5):
        spool.put("t", f"m{i}")
    assert "spool full" in caplog.text and len(spool) == 3
    spool.close()
    again = Spool(tmp_path, limit=3)  # a new process: numbering continues after the last
    again.put("t", "m5")
    got = []
    while (item := again.peek()) is not None:
        got.append(item[1]["payload"])
        again.remove(item[0])
    assert got == ["m3", "m4", "m5"]
    assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no temporary files left visible


def test_a_spool_is_used_by_one_process_and_others_left_are_named(tmp_path: Path) -> None:
    """Two runs with the same node and input would each send and delete the other's messages:
    the second is refused in one line. Messages a run with another input left behind are
    named at start (this run does not send them); a spool in use by a running process is
    not."""
    from edge_runtime.mqtt import Spool

    mine = Spool(tmp_path / "home_mic")
    with pytest.raises(ValueError, match="in use by another edge-detect"):
        Spool(tmp_path / "home_mic")
    left = Spool(tmp_path / "home_cam")
    left.put("t", "event")
    left.put("t", "event 2")
    busy = Spool(tmp_path / "home_door")
    busy.put("t", "event")
    Spool(tmp_path / "home_empty").close()
    left.close()  # its run ended; busy still runs
    assert mine.others_left() == [(tmp_path / "home_cam", 2)]
    busy.close()
    assert [p.name for p, _ in mine.others_left()] == ["home_cam", "home_door"]


def test_discovery_with_named_classes(tmp_path: Path) -> None:
    """A model with classes: event_types = the classes (+ danger), a binary_sensor per class with
    a fitting device_class, and `danger` on during any event."""
    from edge_runtime.lifecycle import EventRecord
    from edge_runtime.mqtt import MqttSink

    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/home/sounds", input_name="mic",
                    classes=["smoke_alarm", "glass_break", "baby_crying"], node="pi",
                    spool_dir=tmp_path, drain_timeout_s=0.0)
    try:
        configs = sink.discovery()
        rec = EventRecord(id="x", state="start", index=1, start="s", end="e", duration_s=1.0,
                          peak_probability=0.9, mean_probability=0.9, windows=1, source="mic",
                          model_sha256="0", class_name="smoke_alarm")
        sink.on_start(rec)
        queued = []
        while (item := sink.spool.peek()) is not None:
            queued.append((item[1]["topic"], item[1]["payload"]))
            sink.spool.remove(item[0])
    finally:
        sink.close()
    event = configs["homeassistant/event/pi/mic_sound/config"]
    assert event["event_types"] == ["smoke_alarm", "glass_break", "baby_crying", "danger"]
    assert event["state_topic"] == "home/sounds/pi/mic/event"
    classes = {t.split("/")[3]: c["device_class"] for t, c in configs.items()
               if t.startswith("homeassistant/binary_sensor/") and "state_topic" in c
               and "/class/" in c["state_topic"]}
    assert classes == {"smoke_alarm": "smoke", "glass_break": "safety", "baby_crying": "sound",
                       "danger": "safety"}
    base = "home/sounds/pi"
    at_start = [(f"{base}/class/{c}", "OFF")
                for c in ("smoke_alarm", "glass_break", "baby_crying", "danger")]
    assert queued[:4] == at_start  # no event is open when a run starts
    assert [t for t, _ in queued[4:]] == [f"{base}/mic/event", f"{base}/class/smoke_alarm",
                                          f"{base}/class/danger", f"{base}/last_event"]
    assert json.loads(queued[4][1])["event_type"] == "smoke_alarm"


@pytest.mark.parametrize("url", ["mqtt://ha:pa#ss@broker", "mqtt://ha:pa/ss@broker:1883",
                                 "mqtt://ha:pa?ss@broker", "mqtt://ha:12/34@broker",
                                 "mqtt://ha:12#34@broker", "mqtt://ha:p@x/s@broker"])
def test_a_password_that_needs_encoding_is_named_not_taken_for_a_port(url: str) -> None:
    """Was: "invalid port" (urlsplit ends the host at '#', '/' or '?'), the password shown."""
    from edge_runtime.mqtt import parse_url

    with pytest.raises(ValueError, match="percent-encoded") as err:
        parse_url(url)
    assert "ss@" not in str(err.value)
    target = parse_url("mqtt://ha:pa%23s%2Fs%40@broker:1884/home")
    assert (target.password, target.host, target.port, target.prefix) == ("pa#s/s@", "broker",
                                                                         1884, "home")
    assert parse_url("mqtt://broker/home%40x").prefix == "home@x"  # an @ in the prefix
    for bad in ("mqtt://broker/home%00x", "mqtt://broker/home%ff"):  # mosquitto drops them
        with pytest.raises(ValueError, match="topic prefix"):
            parse_url(bad)
    with pytest.raises(ValueError, match=r"\*\*\*"):
        parse_url("mqtt://ha:secret@broker:99999")


def test_removed_classes_leave_home_assistant_and_last_event_never_goes_back(
        broker: Broker, tiny_model: Path, tmp_path: Path) -> None:
    """A class sensor retained by an earlier model (a class since removed from the mapping) is
    deleted from Home Assistant's discovery; files read out of order (a folder's older
    recording after a newer one) never move "Last event" backwards."""
    inbox = tmp_path / "in"
    inbox.mkdir()
    sf.write(inbox / "a_new.wav", np.concatenate([hiss(2.0), tone(4.0)]), SR)
    sf.write(inbox / "b_old.wav", np.concatenate([hiss(2.0), tone(4.0)]), SR)
    hour_ago = time.time() - 3600
    os.utime(inbox / "b_old.wav", (hour_ago, hour_ago))
    stale = "homeassistant/binary_sensor/kitchen/old_class/config"
    setter = paho.Client(paho.CallbackAPIVersion.VERSION2)
    setter.connect("127.0.0.1", broker.port)
    setter.loop_start()
    setter.publish(stale, json.dumps({"name": "Old class"}), qos=1,
                   retain=True).wait_for_publish(10)
    setter.publish("edge-detect/kitchen/class/old_class", "OFF", qos=1,
                   retain=True).wait_for_publish(10)
    setter.publish("homeassistant/event/kitchen/cam_sound/config",  # an earlier input name
                   json.dumps({"name": "Danger sound cam"}), qos=1,
                   retain=True).wait_for_publish(10)
    setter.disconnect()
    setter.loop_stop()
    live = Watcher(broker.port, ["edge-detect/kitchen/last_event"])
    assert live.subscribed.wait(10)
    res = subprocess.run(edge_detect("--model", str(tiny_model), "--input", str(inbox), "--once",
                                     "--settle", "0", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                     "--mqtt-node", "Kitchen", "--events",
                                     str(tmp_path / "ev.jsonl"),
                                     "--mqtt-spool", str(tmp_path / "spool")),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "removing the Home Assistant entity of class 'old_class'" in res.stderr
    starts = {Path(r["source"]).name: r["start"] for r in ended_events(tmp_path / "ev.jsonl")}
    assert starts["b_old.wav"] < starts["a_new.wav"]
    assert live.wait(lambda m: len(m) >= 1, 10)
    time.sleep(0.5)
    live.close()
    assert [p for _, p, _ in live.messages] == [starts["a_new.wav"]]
    after = Watcher(broker.port, ["homeassistant/#", "edge-detect/kitchen/class/#"])
    assert after.wait(lambda m: any("/danger" in t for t, _, _ in m), 10)
    time.sleep(0.5)
    after.close()
    topics = {t for t, _, _ in after.messages}
    assert stale not in topics and "edge-detect/kitchen/class/old_class" not in topics
    # the event entity of an input this run does not serve (renamed: cam → in) is gone too
    assert "homeassistant/event/kitchen/cam_sound/config" not in topics
    assert "homeassistant/event/kitchen/in_sound/config" in topics
    assert "removing the Home Assistant event entity 'cam_sound'" in res.stderr
    assert "homeassistant/binary_sensor/kitchen/danger/config" in topics


def _record(event_id: str, state: str, source: str, cls: str = "smoke_alarm"):
    from edge_runtime.lifecycle import EventRecord

    return EventRecord(id=event_id, state=state, index=1, start="2026-12-03T10:00:00.000Z",
                       end="2026-12-03T10:00:05.000Z", duration_s=5.0, peak_probability=0.9,
                       mean_probability=0.9, windows=1, source=source, model_sha256="0",
                       class_name=cls)


def _retained(port: int, topics: list[str]) -> dict[str, str]:
    """The retained payload of each topic under ``topics`` as a new subscriber sees it."""
    seen = Watcher(port, topics)
    assert seen.subscribed.wait(10)
    time.sleep(0.5)
    seen.close()
    return {t: p for t, p, retained in seen.messages if retained}


def test_home_assistant_never_reads_a_deaf_or_shared_sensor_as_clear(tmp_path: Path) -> None:
    """Found by a newcomer with two cameras and a camera reboot:
    - one input's event ending switched the shared class sensor OFF while another input's
      alarm of that class went on: OFF now waits for the last open event of the class;
    - while no input can be heard (reconnecting), the class sensors stayed available and OFF:
      they now also depend on ``<base>/listening``, offline while every input is unhealthy;
    - a broker restarted without persistence lost the retained class states: they are sent
      again at every connection."""
    from edge_runtime.lifecycle import Health
    from edge_runtime.mqtt import MqttSink

    broker = Broker(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text().replace("persistence true",
                                                           "persistence false"))
    broker.start()
    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}", input_name="porch+kitchen",
                    input_names=["porch", "kitchen"],
                    classes=["smoke_alarm", "glass_break"], node="pi",
                    spool_dir=tmp_path / "spool", drain_timeout_s=5.0)
    base = "edge-detect/pi"
    try:
        assert sink._connected.wait(10)
        config = sink.discovery()["homeassistant/binary_sensor/pi/smoke_alarm/config"]
        assert config["availability"] == [{"topic": f"{base}/status"},
                                          {"topic": f"{base}/listening"}]
        assert config["availability_mode"] == "all" and "availability_topic" not in config
        sink.on_start(_record("a", "start", "porch"))
        sink.on_start(_record("b", "start", "kitchen"))
        sink.on_end(_record("b", "end", "kitchen"))
        time.sleep(1.0)
        state = _retained(broker.port, [f"{base}/class/#", f"{base}/listening"])
        assert state[f"{base}/class/smoke_alarm"] == "ON", state  # porch's alarm goes on
        assert state[f"{base}/listening"] == "online"
        sink.on_health(Health("porch", False, "reconnecting: stream ended"))
        time.sleep(0.5)
        assert _retained(broker.port, [f"{base}/listening"])[f"{base}/listening"] == "online"
        # kitchen still hears (entities available); "Input healthy" says which is not heard
        assert (sink._diag["healthy"], sink._diag["problem"]) == (False, "not heard: porch")
        sink.on_health(Health("kitchen:http://cam", False, "input flat for 10 s"))
        time.sleep(0.5)
        assert _retained(broker.port, [f"{base}/listening"])[f"{base}/listening"] == "offline"
        sink.on_health(Health("kitchen", True))  # reopened: its stream's old report is void
        sink.on_end(_record("a", "end", "porch"))
        time.sleep(1.0)
        state = _retained(broker.port, [f"{base}/class/#", f"{base}/listening"])
        assert state[f"{base}/class/smoke_alarm"] == "OFF" and state[f"{base}/listening"] == \
            "online", state
        sink.on_start(_record("c", "start", "porch"))  # an alarm goes on across the restart
        time.sleep(0.5)
        broker.stop()  # no persistence: every retained state is gone
        broker.start()
        deadline = time.monotonic() + 30
        state = {}
        while time.monotonic() < deadline and len(state) < 4:
            state = _retained(broker.port, [f"{base}/class/#", f"{base}/listening"])
        assert state == {f"{base}/class/smoke_alarm": "ON", f"{base}/class/glass_break": "OFF",
                         f"{base}/class/danger": "ON", f"{base}/listening": "online"}, state
    finally:
        sink.close()
        broker.stop()


def test_one_process_per_node_and_a_failed_write_never_leaves_a_class_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes publishing as one node shared its class sensors, status and availability
    (one's end cleared the other's alarm): the second is refused in one line. An event
    message that cannot be written (a full disk) no longer keeps its class ON for the rest of
    the run: the class goes OFF all the same."""
    import errno

    from edge_runtime.mqtt import MqttSink

    url = f"mqtt://127.0.0.1:{free_port()}"
    sink = MqttSink(url, input_name="porch", classes=["smoke_alarm"], node="pi",
                    spool_dir=tmp_path, drain_timeout_s=0.0)
    try:
        for spool in (tmp_path, tmp_path / "elsewhere"):  # a service and a hand-run test
            with pytest.raises(ValueError, match="another edge-detect on this machine "
                                                 "publishes to MQTT as node 'pi'"):
                MqttSink(url, input_name="kitchen", classes=["smoke_alarm"], node="pi",
                         spool_dir=spool, drain_timeout_s=0.0)
        MqttSink(url, input_name="kitchen", classes=["smoke_alarm"], node="pi2",
                 spool_dir=tmp_path, drain_timeout_s=0.0).close()  # another node: fine
        sink.on_start(_record("a", "start", "porch"))
        put = sink.spool.put

        def full_for_events(topic: str, payload: str, retain: bool = False) -> None:
            if topic.endswith("/event"):
                raise OSError(errno.ENOSPC, "No space left on device")
            put(topic, payload, retain)

        monkeypatch.setattr(sink.spool, "put", full_for_events)
        with pytest.raises(OSError):
            sink.on_end(_record("a", "end", "porch"))
        monkeypatch.setattr(sink.spool, "put", put)
        states = []
        while (item := sink.spool.peek()) is not None:
            if "/class/smoke_alarm" in item[1]["topic"]:
                states.append(item[1]["payload"])
            sink.spool.remove(item[0])
        assert states == ["OFF", "ON", "OFF"], states  # start, the event, its end
    finally:
        sink.close()
    again = MqttSink(url, input_name="kitchen", classes=["smoke_alarm"], node="pi",
                     spool_dir=tmp_path, drain_timeout_s=0.0)  # the first has ended
    again.close()
    # a start that fails half-way (a full disk) lets go of its locks: the next start works
    from edge_runtime.mqtt import Spool

    def no_space(*_args, **_kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Spool, "put", no_space)
    with pytest.raises(OSError):
        MqttSink(url, input_name="kitchen", classes=["smoke_alarm"], node="pi",
                 spool_dir=tmp_path, drain_timeout_s=0.0)
    monkeypatch.undo()
    MqttSink(url, input_name="kitchen", classes=["smoke_alarm"], node="pi",
             spool_dir=tmp_path, drain_timeout_s=0.0).close()


def test_the_delivery_thread_survives_an_error(broker: Broker, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """An exception out of a publish (paho raises when the connection goes between the check
    and the publish) ended the delivery thread: every later message stayed in the spool until
    a restart. It is logged once and delivery goes on."""
    from edge_runtime.mqtt import MqttSink

    sink = MqttSink(f"mqtt://127.0.0.1:{broker.port}", input_name="mic",
                    classes=["smoke_alarm"], node="pi", spool_dir=tmp_path / "spool",
                    drain_timeout_s=5.0)
    try:
        assert sink._connected.wait(10)
        assert wait_until(lambda: len(sink.spool) == 0, 10)
        publish, failed = sink.client.publish, []

        def once_broken(*args, **kwargs):
            if not failed:
                failed.append(1)
                raise RuntimeError("The client is not currently connected.")
            return publish(*args, **kwargs)

        sink.client.publish = once_broken
        sink.on_start(_record("a", "start", "mic"))
        assert wait_until(lambda: len(sink.spool) == 0, 15), len(sink.spool)
    finally:
        sink.close()
    assert failed and "MQTT delivery: RuntimeError" in caplog.text
    state = _retained(broker.port, ["edge-detect/pi/class/#"])
    assert state["edge-detect/pi/class/smoke_alarm"] == "ON"
