"""The generated systemd unit: a dedicated user, sandboxing, Restart=always, and arguments that
cannot add a directive. ``systemd-analyze verify`` checks it where systemd is installed."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf

from edge_runtime import service
from tests.runtime_model import SR, build_tiny_model, hiss

DIRECTIVE = "ExecStartPre=/bin/touch /tmp/pwned"


def unit_for(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args,
                          "--print-systemd-unit"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_unit_runs_sandboxed_as_a_dedicated_user() -> None:
    text = unit_for("--input", "mic", "--events", "/var/lib/edge-detect/events.jsonl",
                    "--service-user", "edgeuser")
    lines = text.splitlines()
    for directive in ("User=edgeuser", "Restart=always", "NoNewPrivileges=yes",
                      "PrivateTmp=yes", "ProtectSystem=strict", "StateDirectory=edge-detect",
                      "ReadWritePaths=\"-/var/lib/edge-detect\""):
        assert directive in lines, (directive, text)
    exec_line = next(line for line in lines if line.startswith("ExecStart="))
    assert "service-user" not in exec_line and "edgeuser" not in exec_line
    assert "User=edge-detect" in unit_for("--input", "mic").splitlines()  # the default


def test_mqtt_spool_is_writable_under_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """ProtectSystem=strict / ProtectHome=read-only: an explicit --mqtt-spool is a
    ReadWritePaths entry; the default spool is systemd's StateDirectory (was ~/.local/state,
    read-only there: the service could not start with --mqtt)."""
    from edge_runtime.mqtt import default_spool_dir

    text = unit_for("--input", "mic", "--mqtt", "mqtt://h", "--mqtt-spool", "/srv/spool")
    assert "ReadWritePaths=\"-/srv/spool\"" in text.splitlines(), text
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-detect")
    assert default_spool_dir() == Path("/var/lib/edge-detect/mqtt-spool")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", "/x/state")
    assert default_spool_dir() == Path("/x/state/edge-detect/mqtt-spool")


def test_state_paths_are_writable_under_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """A watched folder's record of read files: the StateDirectory by default, an explicit
    --watch-state becomes a ReadWritePaths entry."""
    from edge_runtime.watch_record import default_record_dir

    text = unit_for("--input", "/srv/rec", "--watch-state", "/srv/state")
    assert "ReadWritePaths=\"-/srv/state\"" in text.splitlines(), text
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-detect")
    assert default_record_dir() == Path("/var/lib/edge-detect/watched")


def test_a_password_in_the_unit_is_warned_about() -> None:
    """A unit file and ``ps`` are readable by every user: a password in --mqtt / --notify /
    --input gets one warning naming the option and the way out (a config file)."""
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--input", "mic", "--mqtt",
                          "mqtt://ha:s3cret@broker", "--notify=https://u:tok@ntfy.example/x",
                          "--print-systemd-unit"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "holds a password or token" in x]
    assert "--mqtt and --notify" in line and "--config" in line and "s3cret" not in line
    quiet = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--input", "mic", "--mqtt",
                            "mqtt://ha@broker", "--print-systemd-unit"], capture_output=True,
                           text=True, timeout=60)
    assert quiet.returncode == 0 and "password" not in quiet.stderr, quiet.stderr


def test_files_holding_a_password_are_not_left_readable_by_everyone(tmp_path: Path) -> None:
    """Found by a newcomer: a unit written with a camera's password was -rw-r--r--, and a
    config file holding one, readable by every user, passed silently."""
    unit = tmp_path / "edge-detect.service"
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--input",
                          "cam=rtsp://admin:hunter2@192.168.1.20/live", "--write-systemd-unit",
                          str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert unit.stat().st_mode & 0o077 == 0, oct(unit.stat().st_mode)
    plain = tmp_path / "plain.service"
    subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--input", "mic",
                    "--write-systemd-unit", str(plain)], capture_output=True, timeout=60,
                   check=True)
    assert plain.stat().st_mode & 0o004  # nothing secret: the usual 644
    config = tmp_path / "edge-detect.toml"
    config.write_text('[sources.porch]\ninput = "rtsp://admin:hunter2@192.168.1.20/live"\n')
    config.chmod(0o644)
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--config", str(config),
                          "--print-systemd-unit"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "every user of this machine can" in x]
    assert "chmod 640" in line and "hunter2" not in res.stderr
    config.chmod(0o640)
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--config", str(config),
                          "--print-systemd-unit"], capture_output=True, text=True, timeout=60)
    assert "every user of this machine can" not in res.stderr, res.stderr


def test_an_argument_cannot_add_a_directive() -> None:
    text = unit_for("--input", f"x\n{DIRECTIVE}", "--device", "a \"b\" $HOME %n \\ c\td")
    lines = text.splitlines()
    assert not any(line.startswith("ExecStartPre") for line in lines), text
    exec_lines = [line for line in lines if line.startswith("ExecStart=")]
    assert len(exec_lines) == 1
    assert '"x\\nExecStartPre=/bin/touch /tmp/pwned"' in exec_lines[0]
    assert '"a \\"b\\" $$HOME %%n \\\\ c\\td"' in exec_lines[0]
    with pytest.raises(ValueError, match="not a valid user name"):
        service.unit_text([], user="root\nUser=root")
    with pytest.raises(ValueError, match="control characters"):
        service.unit_text([], workdir="/tmp/a\nb")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd not installed")
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    unit = tmp_path / "edge-detect.service"
    unit.write_text(service.unit_text(["--input", f"x\n{DIRECTIVE}", "--events",
                                       "/var/lib/edge-detect/e.jsonl"], user="edge-detect",
                                      workdir=tmp_path))
    res = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True, timeout=60)
    problems = [line for line in (res.stdout + res.stderr).splitlines()
                if "edge-detect.service" in line]
    assert res.returncode == 0 and not problems, res.stdout + res.stderr


def test_sighup_does_not_stop_the_daemon(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny")
    (tmp_path / "in").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                             "--input", str(tmp_path / "in")], stderr=subprocess.PIPE)
    try:
        time.sleep(3)
        proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert proc.poll() is None
        import soundfile as sf

        sf.write(tmp_path / "in" / "after.wav", hiss(1.0), SR)
        time.sleep(3)
    finally:
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err
    assert "SIGHUP received" in err and "after.wav: 1.0 s" in err


def test_stale_temporary_clips_are_removed_at_start(tmp_path: Path) -> None:
    from edge_runtime.sinks import AudioHistory, ClipSink

    (tmp_path / ".clip.x1y2.flac.tmp").write_bytes(b"half a clip")
    (tmp_path / "20240101T000000.000Z_a.flac").write_bytes(b"a finished clip")
    ClipSink(tmp_path, AudioHistory(SR))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20240101T000000.000Z_a.flac"]


def test_clip_retention_by_age_then_size(tmp_path: Path) -> None:
    import os

    from edge_runtime.retention import prune

    now = time.time()
    for i, (days, kib) in enumerate([(10, 100), (5, 300), (3, 300), (1, 300), (0, 300)]):
        path = tmp_path / f"clip{i}.flac"
        path.write_bytes(b"\0" * kib * 1024)
        os.utime(path, (now - days * 86400, now - days * 86400))
    (tmp_path / ".clip.x.flac.tmp").write_bytes(b"\0" * 1024 * 1024)  # not a clip: untouched
    removed = prune(tmp_path, max_mb=0.7, keep_days=7, now=now)
    assert [p.name for p in removed] == ["clip0.flac", "clip1.flac", "clip2.flac"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".clip.x.flac.tmp", "clip3.flac",
                                                          "clip4.flac"]


def test_clip_retention_keeps_the_best_clips_of_each_class(tmp_path: Path) -> None:
    import os

    from edge_runtime.retention import prune
    from edge_runtime.sinks import clip_name

    now = time.time()
    specs = [("dog_bark", 0.99, 9), ("dog_bark", 0.70, 8), ("siren", 0.80, 7),
             ("dog_bark", 0.95, 6), ("siren", 0.60, 5), ("dog_bark", 0.75, 1)]
    for i, (label, peak, days) in enumerate(specs):
        path = tmp_path / clip_name(f"2024010{i}T000000.000Z", label, peak, "mic")
        path.write_bytes(b"\0" * 200 * 1024)
        os.utime(path, (now - days * 86400, now - days * 86400))
    removed = prune(tmp_path, max_mb=0.65, keep_days=3, now=now, keep_best=1)
    kept = sorted(p.name for p in tmp_path.iterdir())
    # spared: the best dog_bark (0.99, 9 days old) and the best siren (0.80, 7 days old)
    assert any("dog_bark_p0.990" in k for k in kept) and any("siren_p0.800" in k for k in kept)
    assert not any("siren_p0.600" in k for k in kept)
    assert len(removed) == 3 and len(kept) == 3  # the newest one (1 day) stays: 600 KB fits


def test_clip_retention_in_the_daemon(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    from tests.runtime_model import tone

    model = build_tiny_model(tmp_path / "tiny")
    d, clips = tmp_path / "in", tmp_path / "clips"
    d.mkdir()
    for i in range(3):
        sf.write(d / f"{i}.wav", np.concatenate([hiss(1.0), tone(3.0), hiss(1.0)]), SR)
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(model),
                          "--input", str(d), "--once", "--save-clips", str(clips),
                          "--clips-max-mb", "0.3"], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    kept = list(clips.glob("*.flac"))
    assert kept and sum(p.stat().st_size for p in kept) <= 0.3 * 1024 * 1024
    assert "clip retention: removed" in res.stderr


def test_a_unit_for_an_input_that_ends_is_refused_and_hidden_paths_are_named(
        tmp_path: Path) -> None:
    """Restart=always reruns whatever ends: --once, stdin (a service has none) and one file are
    refused in one line, no unit written. Output paths the sandbox hides (PrivateTmp) or the
    service user cannot write (another user's home) are named; a token in a query counts as
    a password."""
    clip = tmp_path / "one.wav"
    sf.write(clip, hiss(1.0), SR)
    for args, why in ((["--input", "mic", "--once"], "--once exits"),
                      (["--input", "-"], "a service has no stdin"),
                      (["--input", str(clip)], "one file ends")):
        res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args,
                              "--write-systemd-unit", str(tmp_path / "x.service")],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and why in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.service").exists()
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--input", "/srv/rec",
                          "--events", "/root/events.jsonl", "--watch-state", "/var/tmp/ws",
                          "--notify", "https://ntfy.example/t?auth=tk_1",
                          "--print-systemd-unit"], capture_output=True, text=True, timeout=60,
                         cwd="/")
    assert res.returncode == 0, res.stderr
    assert "--events /root/events.jsonl: the service runs as edge-detect" in res.stderr
    assert "--watch-state /var/tmp/ws is under /var/tmp" in res.stderr
    assert "--notify holds a password or token" in res.stderr


def test_outputs_from_a_config_file_are_writable_in_the_unit(tmp_path: Path) -> None:
    """DEPLOY tells people to move options (a password) into --config: outputs named only
    there still become ReadWritePaths (ProtectSystem=strict would make them read-only). A user's
    own home is not "another user's home"; a watched folder under /tmp is named."""
    conf = tmp_path / "edge.toml"
    conf.write_text('events = "/srv/x/../data/ev.jsonl"\nsave_clips = "/srv/my clips"\n')
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--config", str(conf),
                          "--input", "/tmp/recordings", "--service-user", "pi",
                          "--mqtt-spool", "/home/pi/spool", "--watch-state",
                          "/var/lib/edge-detect/watched", "--print-systemd-unit"],
                         capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for path in ("/srv/data", "/srv/my clips", "/home/pi/spool"):
        assert f'ReadWritePaths="-{path}"' in lines, res.stdout  # quoted, normalised
    assert "/srv/my clips does not exist yet: create it" in res.stderr
    assert "/var/lib/edge-detect/watched does not exist" not in res.stderr  # StateDirectory=
    assert "another user's home" not in res.stderr
    assert "input /tmp/recordings is under /tmp" in res.stderr
