"""Synthetic smoke/CO alarm training clips: the standard patterns, and only for a class the
mapping names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.mapping import load_mapping
from training.negatives import RATE
from training.synthetic_alarms import CATEGORY, alarm, alarm_clips, gate


def _runs(envelope: np.ndarray) -> list[tuple[float, float]]:
    """(start, length) in seconds of each stretch where ``envelope`` is on (> 0.5)."""
    on = np.concatenate([[0], (envelope > 0.5).astype(int), [0]])
    edges = np.flatnonzero(np.diff(on))
    return [(a / RATE, (b - a) / RATE) for a, b in zip(edges[::2], edges[1::2], strict=True)]


@pytest.mark.parametrize(("kind", "beep_s", "per_cycle", "period_s"),
                         [("temporal3", 0.5, 3, 4.0), ("temporal4", 0.1, 4, 5.7)])
def test_alarm_patterns_keep_their_standard_timing(kind: str, beep_s: float, per_cycle: int,
                                                   period_s: float) -> None:
    for seed in range(5):
        runs = _runs(gate(np.random.default_rng(seed), 24.0, kind))
        inner = runs[1:-1]  # the first and last may be cut by the clip's ends
        assert inner and all(0.85 * beep_s <= length <= 1.15 * beep_s for _, length in inner)
        starts = np.array([start for start, _ in runs])
        gaps = np.diff(starts)
        long_gaps = gaps[gaps > 1.5 * 2 * beep_s * 1.15]  # the quiet after each group
        assert long_gaps.size >= 2, runs
        cycle = np.diff(starts[np.flatnonzero(gaps > 1.5 * 2 * beep_s * 1.15) + 1])
        assert np.all(np.abs(cycle - period_s) <= 0.11 * period_s), (kind, cycle)
        assert len(runs) >= per_cycle * (24.0 // (1.1 * period_s)) - 1


def test_alarm_clips_follow_the_mapping(tmp_path: Path) -> None:
    audio = alarm(np.random.default_rng(0))
    assert audio.size == 8 * RATE and -31 <= 20 * np.log10(np.abs(audio).max()) <= -2
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * RATE / audio.size
    assert 2700 <= peak_hz <= 3700, peak_hz  # a piezo horn's tone
    mapping = load_mapping(None)
    cls = mapping.class_of(CATEGORY)
    assert cls == "smoke_alarm"
    clips = alarm_clips(tmp_path, cls, count=3)
    assert [c.label for c in clips] == [1, 1, 1] and {c.danger_class for c in clips} == {cls}
    again = sf.read(clips[0].path)[0]
    assert again.size == 8 * RATE
    assert alarm_clips(tmp_path / "none", None) == [] and not (tmp_path / "none").exists()
