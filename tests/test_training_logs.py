"""Progress on long workbench work without a terminal: log lines, not a hidden bar."""

from __future__ import annotations

import logging

import pytest

from training import logs


def test_progress_logs_lines_when_stderr_is_no_terminal(monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    clock = iter(range(0, 1000, 20))  # each look at the clock: 20 s later
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(logs.sys.stderr, "isatty", lambda: False)
    with caplog.at_level(logging.INFO):
        assert list(logs.progress(list("abcdef"), "embedding", "clip")) == list("abcdef")
    said = [r.message for r in caplog.records]
    assert said and all(m.startswith("embedding: ") and m.endswith("/6 clips") for m in said)
    assert len(said) < 6  # at most one line per 30 s, not one per item
