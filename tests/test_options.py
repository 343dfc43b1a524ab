"""Every edge-detect option is declared once (edge_runtime/options.py); bad values from the
command line or the TOML config are refused in one line naming the option, exit 2, before any
model is loaded (the model dir given here does not exist: a model load would fail otherwise).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from edge_runtime import cli
from edge_runtime.options import BY_NAME, MAX_THREADS, OPTIONS, THRESHOLD_FALLBACK, OptionError

NO_MODEL = "/nonexistent/model-dir"


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the real CLI entry point in-process; return its one error line."""
    with pytest.raises(SystemExit) as info:
        cli.main(["--model", NO_MODEL, "--input", "/nonexistent/in", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("edge-detect: error:"), err
    assert "Traceback" not in err and "manifest" not in err, err
    return err


def a_file(tmp: Path) -> str:
    path = tmp / "plain-file"
    path.write_text("x")
    return str(path)


# (argv, a fragment the line must contain); {file}/{dir} are replaced per test
BAD_CLI: list[tuple[list[str], str]] = [
    (["--threshold", "7"], "--threshold"),
    (["--threshold", "0"], "--threshold"),
    (["--threshold", "1"], "--threshold"),
    (["--threshold", "-0.1"], "--threshold"),
    (["--threshold", "nan"], "--threshold"),
    (["--threshold", "inf"], "--threshold"),
    (["--threshold", "high"], "--threshold"),
    (["--threshold", ""], "--threshold"),
    (["--hysteresis", "-1"], "--hysteresis"),
    (["--hysteresis", "1"], "--hysteresis"),
    (["--hysteresis", "nan"], "--hysteresis"),
    (["--threshold", "0.3", "--hysteresis", "0.3"], "--hysteresis"),
    (["--min-duration", "-1"], "--min-duration"),
    (["--min-duration", "1e9"], "--min-duration"),
    (["--cooldown", "-0.5"], "--cooldown"),
    (["--cooldown", "inf"], "--cooldown"),
    (["--cooldown", "[1,2]"], "--cooldown"),
    (["--settle", "-1"], "--settle"),
    (["--rate", "0"], "--rate"),
    (["--rate", "44.1k"], "--rate"),
    (["--rate", "10000000"], "--rate"),
    (["--channels", "0"], "--channels"),
    (["--channels", "1000"], "--channels"),
    (["--threads", "-2"], "--threads"),
    (["--threads", "0"], "--threads"),
    (["--threads", "10000"], "--threads"),
    (["--threads", "1.5"], "--threads"),
    (["--format", "wav"], "--format"),
    (["--provider", "gpu"], "--provider"),
    (["--expect-model", "xyz"], "--expect-model"),
    (["--expect-model", "a" * 63], "--expect-model"),
    (["--save-clips", "{file}"], "--save-clips"),
    (["--events", "{dir}"], "--events"),
    (["--verbose", "--quiet"], "--quiet"),
    (["--no-such-option"], "--no-such-option"),
]

# (TOML text, a fragment the line must contain)
BAD_TOML: list[tuple[str, str]] = [
    ('threshold = "high"\n', "threshold must be a number, got a string"),
    ("threshold = 7\n", "threshold"),
    ("threshold = nan\n", "threshold"),
    ("threshold = true\n", "threshold"),
    ('once = "false"\n', "once must be true or false"),
    ("window_only = 1\n", "window_only"),
    ("cooldown = [1, 2]\n", "cooldown must be a number, got a list"),
    ("cooldown = {a = 1}\n", "cooldown"),
    ("threads = 10000\n", "threads"),
    ("threads = 2.0\n", "threads must be an integer"),
    ('rate = "48000"\n', "rate"),
    ('provider = "gpu"\n', "provider"),
    ("format = 16\n", "format"),
    ("treshold = 0.5\n", "treshold is not an option"),
    ('config = "other.toml"\n', "config is only a command-line option"),
    ("list-devices = true\n", "list-devices is only a command-line option"),
    ("[edge-detect]\nhysteresis = -1\n", "hysteresis"),
    ("threshold = \n", "invalid TOML"),
    ("events = 5\n", "events must be a string"),
    ('model = ["a"]\n', "model must be a string"),
    ("save_clips = '{file}'\n", "save_clips"),
    ("min-duration = 1.0\nmin_duration = 2.0\n", "given twice"),
    ("threshold = 0.4\nhysteresis = 0.5\n", "--hysteresis"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_CLI,
                         ids=[" ".join(a)[:40] for a, _ in BAD_CLI])
def test_bad_command_line_value_is_one_line(argv: list[str], expected: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("{file}", a_file(tmp_path)).replace("{dir}", str(tmp_path))
            for a in argv]
    assert expected in refused(argv, capsys)


@pytest.mark.parametrize(("text", "expected"), BAD_TOML, ids=[t[:30] for t, _ in BAD_TOML])
def test_bad_toml_value_is_one_line(text: str, expected: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(text.replace("{file}", a_file(tmp_path)))
    err = refused(["--config", str(config)], capsys)
    assert expected in err and (str(config) in err or "--hysteresis" in err)


def test_unreadable_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "cannot read config" in refused(["--config", str(tmp_path / "missing.toml")], capsys)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe threshold = 0.5")
    assert "not UTF-8" in refused(["--config", str(binary)], capsys)


def test_corpus_is_large() -> None:
    assert len(BAD_CLI) + len(BAD_TOML) + 2 >= 40


# the real console script, in a subprocess, for a representative subset
SUBSET = [["--threshold", "7"], ["--hysteresis", "-1"], ["--threads", "10000"],
          ["--threshold", "nan"]]


@pytest.mark.parametrize("argv", SUBSET, ids=[" ".join(a) for a in SUBSET])
def test_edge_detect_process_refuses_in_one_line(argv: list[str]) -> None:
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", NO_MODEL,
                          "--input", "/nonexistent/in", *argv],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and argv[0] in res.stderr, res.stderr


def test_edge_detect_process_refuses_toml_type(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text('threshold = "high"\nonce = "false"\n')
    res = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", NO_MODEL,
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "threshold" in res.stderr and "Traceback" not in res.stderr


# --- the declarations themselves ----------------------------------------------------------

def test_every_option_is_declared_once_and_derived_into_click() -> None:
    params = {p.name: p for p in cli.command.params}
    assert set(params) == {o.name for o in OPTIONS}
    for option in OPTIONS:
        assert params[option.name].default == option.default
        assert params[option.name].help == option.help


def test_defaults_come_from_one_place() -> None:
    from edge_runtime.events import EventConfig

    ev = EventConfig()
    assert BY_NAME["hysteresis"].default == ev.hysteresis
    assert BY_NAME["min_duration"].default == ev.min_duration_s
    assert BY_NAME["cooldown"].default == ev.cooldown_s
    assert THRESHOLD_FALLBACK == 0.5
    assert BY_NAME["threads"].hi == MAX_THREADS <= 64


def test_good_values_pass(tmp_path: Path) -> None:
    from edge_runtime import config

    path = tmp_path / "ok.toml"
    path.write_text('threshold = 0.6\ncooldown = 3\nonce = true\nprovider = "CPU"\n'
                    f'save-clips = "{tmp_path / "clips"}"\n')
    values = config.load(path)
    assert values == {"threshold": 0.6, "cooldown": 3.0, "once": True, "provider": "cpu",
                      "save_clips": str(tmp_path / "clips")}
    assert BY_NAME["threads"].parse("2", text=True) == 2
    with pytest.raises(OptionError):
        BY_NAME["threads"].parse(True)


def test_help_shows_ranges_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        cli.main(["-h"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "--threshold" in out and "else 0.5" in out and "--expect-model" in out
    assert isinstance(cli.command, click.Command)
