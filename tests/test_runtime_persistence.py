"""Per-class minimum persistence (``classes.min_seconds``): the rule on window sequences, the
event state machine fed through it, per-stream state, and ``edge-detect --once`` end to end on
a hand-built class model (``alarm`` persisted 6 s, ``bang`` not)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.classes import DECISION_THRESHOLD, normalise
from edge_runtime.detector import Detector
from edge_runtime.events import EventConfig, EventTracker
from edge_runtime.persistence import (
    DIP_FLOOR,
    HELD_CAP,
    Persistence,
    held_windows,
    hold,
    release_level,
)
from tests.runtime_model import SR, hiss, tone
from tests.test_training_calibrate import build_tiny_class_model, daemon_events

WINDOW, STRIDE = 5.0, 2.0  # the mn04 class model's windows


def windows(seconds: float) -> list[tuple[float, float]]:
    """(start, end) of the 5 s windows scored every 2 s over ``seconds`` of audio."""
    return [(s, s + WINDOW) for s in np.arange(0.0, seconds - WINDOW + 1e-9, STRIDE)]


def events_for(sound: tuple[float, float], min_seconds: float,
               seconds: float = 60.0) -> list[tuple[float, float, str]]:
    """Events of one class that scores 0.9 (normalised) in every window overlapping ``sound``
    and 0.1 elsewhere, through persistence then the daemon's event rules."""
    persistence = Persistence([min_seconds])
    tracker = EventTracker(EventConfig(threshold=DECISION_THRESHOLD), STRIDE)
    out = []
    for start, end in windows(seconds):
        row = np.array([0.9 if start < sound[1] and sound[0] < end else 0.1])
        held = persistence.step(row >= DECISION_THRESHOLD, end, row >= DIP_FLOOR)
        p = float(hold(row, held).max())
        since = persistence.run_since(0) if min_seconds and not held[0] else None
        out += [(t.event.start_s, t.event.end_s, t.kind)
                for t in tracker.update(start, end, p, since_s=since)]
    return out + [(t.event.start_s, t.event.end_s, t.kind) for t in tracker.close(seconds)]


def test_a_short_beep_raises_no_event_a_long_alarm_one() -> None:
    assert len(events_for((20.0, 22.0), 0.0)) == 2  # without persistence: start and end
    assert events_for((20.0, 22.0), 6.0) == []  # 2 s beep: 3 windows, ends 4 s apart
    assert events_for((20.0, 21.0), 6.0) == []
    (start, _, first), (_, end, last) = events_for((20.0, 32.0), 6.0)  # 12 s alarm
    assert (first, last) == ("start", "end")
    # windows overlapping it end at 21, 23, 25 (held), 27 (ends 6 s apart: released); the event
    # starts where its run began: the newest stride of the first window [16, 21), not at 25
    assert start == pytest.approx(19.0)
    assert 32.0 <= end <= 35.0


def test_runs_survive_one_near_dip_and_restart_after_two_or_a_deep_one() -> None:
    ends = np.arange(1, 15) * 2.0
    above = np.array([1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1], bool)[:, None]
    near = np.ones_like(above)  # every dip stays at DIP_FLOOR
    held = held_windows(above, ends, [6.0], near)[:, 0]
    # run from 2 survives the dip at 6: released at 8 (6 s after 2); two dips (12, 14) end
    # it; the run from 16 survives the dip at 22: released at 22 + 2 = 24 (8 s after 16)
    assert held.tolist() == [True, True, False, False, False, False, False, True, True, True,
                             False, False, False, False]
    # the quiet between two clinks falls below DIP_FLOOR: it ends the run like two dips
    deep = near.copy()
    deep[[2, 10]] = False
    assert held_windows(above, ends, [6.0], deep)[:, 0].tolist() == [
        True, True, False, True, True, False, False, True, True, True, False, True, True,
        False]  # each run restarts after its deep dip; only 16 → 28 spans 2 × 6 s with
    # single dips (a beeping pattern): released at 28

    # a CO alarm's temporal-4 (four beeps, 5 s quiet) leaves every third window deep: found
    # once its windows span 12 s; two clinks with quiet between them never are
    co = np.array([1, 1, 0] * 5, bool)[:, None]
    co_ends = np.arange(1, 16) * 2.0
    held_co = held_windows(co, co_ends, [6.0], co.copy())[:, 0]
    released_at = [e for e, a, h in zip(co_ends, co[:, 0], held_co, strict=True) if a and not h]
    assert released_at and released_at[0] == 14.0  # run from 2: 14 - 2 = 12 s
    clinks = np.array([1, 1, 0, 1, 1, 0, 0, 0], bool)[:, None]
    assert held_windows(clinks, np.arange(1, 9) * 2.0, [6.0], clinks.copy())[:, 0].tolist() \
        == clinks[:, 0].tolist()  # every hot window held: nothing released

    assert not held_windows(above, ends, [0.0]).any()  # no persistence, nothing held
    assert held_windows(np.zeros((0, 1), bool), np.zeros(0), [6.0]).shape == (0, 1)


def test_classes_are_held_independently_and_capped_below_the_threshold() -> None:
    persistence = Persistence([4.0, 0.0])
    first = persistence.step(np.array([True, True]), 2.0)
    assert first.tolist() == [True, False]  # only the persisted class is held
    row = hold(np.array([0.95, 0.7]), first)
    assert row.tolist() == [HELD_CAP, 0.7] and HELD_CAP < DECISION_THRESHOLD
    assert hold(np.array([0.3, 0.7]), first).tolist() == [0.3, 0.7]  # never raised
    assert persistence.step(np.array([True, False]), 4.0).tolist() == [True, False]
    assert persistence.step(np.array([True, True]), 6.0).tolist() == [False, False]
    # what a chunk alone may not decide: the persisted class unless released in its window
    assert persistence.unreleased(np.array([True, True]), np.array([False, False])).tolist() \
        == [False, False]
    assert persistence.unreleased(np.array([False, True]), np.array([False, False])).tolist() \
        == [True, False]


def test_each_stream_has_its_own_runs(tmp_path: Path) -> None:
    """Two streams of one detector: the long sound in one releases ``alarm`` there only."""
    model = build_tiny_class_model(tmp_path / "m", (0.5, 0.3), (6.0, 0.0))
    detector = Detector(model, provider="cpu")
    long_stream, short_stream = detector.stream(), detector.stream()
    loud, quiet = tone(1.0, amp=0.3), hiss(1.0)
    long_scores, short_scores = [], []
    for second in range(16):
        long_scores += long_stream.push(loud)
        short_scores += short_stream.push(loud if 5 <= second < 7 else quiet)
    assert max(s.decision for s in short_scores) == pytest.approx(HELD_CAP)
    released = [s for s in long_scores if s.decision >= DECISION_THRESHOLD]
    assert released and released[0].end_s == pytest.approx(11.0)  # ends 5 … 11: 6 s
    held = [s for s in long_scores if s.end_s < 11.0]
    # the class reported and the per-class scores agree with the capped decision
    assert all(s.label == "alarm" and s.classes["alarm"] == pytest.approx(s.decision)
               for s in held + released)
    assert all(s.classes["alarm"] == pytest.approx(HELD_CAP) for s in held)


def test_chunk_decisions_cannot_bypass_persistence(tmp_path: Path) -> None:
    """With chunk decisions on, a 1.5 s burst's own chunks do not decide for a held class."""
    audio = hiss(20.0)
    audio[8 * SR:int(9.5 * SR)] += tone(1.5, amp=0.3)
    for min_seconds, label in (((6.0, 0.0), "safe"), ((), "danger")):
        model = build_tiny_class_model(tmp_path / label, (0.5, 0.3), min_seconds)
        found = Detector(model, provider="cpu", chunk_decisions=True).predict(audio)
        assert found.label == label, (min_seconds, found)


def write(path: Path, seconds: float, sound: tuple[float, float], amp: float) -> None:
    audio = hiss(seconds)
    audio[int(sound[0] * SR):int(sound[1] * SR)] += tone(sound[1] - sound[0], amp=amp)
    sf.write(path, audio, SR)


def short_long_and(tmp_path: Path, name: str, amp: float) -> Path:
    """``tmp_path/audio``: a 1.5 s and a 12 s tone at 0.3 in hiss, and ``name`` (a 1.5 s
    tone at ``amp``)."""
    audio = tmp_path / "audio"
    audio.mkdir()
    write(audio / "short.flac", 20.0, (8.0, 9.5), 0.3)
    write(audio / "long.flac", 24.0, (4.0, 16.0), 0.3)
    write(audio / f"{name}.flac", 20.0, (8.0, 9.5), amp)
    return audio


def test_cli_persisted_class_needs_a_long_sound(tmp_path: Path) -> None:
    """``edge-detect --once``: a 1.5 s burst raises no ``alarm`` event when alarm must last
    6 s, but does without persistence; a 12 s one does; ``bang`` (no persistence) fires on a
    short very loud burst."""
    audio = short_long_and(tmp_path, "bang", 0.9)
    persisted = build_tiny_class_model(tmp_path / "persisted", (0.5, 0.3), (6.0, 0.0))
    plain = build_tiny_class_model(tmp_path / "plain", (0.5, 0.3))

    def by_file(model: Path) -> dict[str, list[tuple[str, float]]]:
        found: dict[str, list[tuple[str, float]]] = {}
        for e in daemon_events(model, audio):
            found.setdefault(Path(e["source"]).stem, []).append(
                (e["class"], e["offset_start_s"]))
        return found

    events = by_file(persisted)
    assert "short" not in events
    ((cls, start),) = events["long"]
    # released by the window [6, 11), timed from the run's first window [0, 5): the sound's
    # onset (4 s) to a stride, as an event without persistence (was: 6 s, the release)
    assert cls == "alarm" and start <= 4.0
    assert [c for c, _ in events["bang"]] == ["bang"]
    before = by_file(plain)
    assert [c for c, _ in before["short"]] == ["alarm"]
    assert before["long"][0][1] == pytest.approx(start)


@pytest.mark.parametrize(("threshold", "long_events"), [("0.5", 1), ("0.99", 0), ("0.45", 1)])
def test_cli_says_why_a_file_held_just_under_the_threshold_has_no_event(
        tmp_path: Path, threshold: str, long_events: int) -> None:
    """A file whose persisted class was heard too briefly peaks at the held cap: no event at
    any --threshold (under 0.5 too: the cap follows it), and its summary line says why; a
    long alarm that merely stays under a high --threshold is not said to be too short. The
    start line lists each class's threshold and how long it must last."""
    audio = short_long_and(tmp_path, "quiet", 0.0)
    persisted = build_tiny_class_model(tmp_path / "persisted", (0.5, 0.3), (6.0, 0.0))
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "--model", str(persisted),
                           "--input", str(audio), "--once", "--settle", "0", "--threshold",
                           threshold], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any("class thresholds" in line and "alarm 0.5 held 6 s, bang 0.3" in line
               for line in lines), done.stderr
    (short,) = [line for line in lines if "short.flac:" in line]
    assert "0 event(s) (alarm heard, but not for the 6 s it must last)" in short
    (long,) = [line for line in lines if "long.flac:" in line]
    assert f"{long_events} event(s)" in long and "must last" not in long
    (quiet,) = [line for line in lines if "quiet.flac:" in line]
    assert "0 event(s)" in quiet and "must last" not in quiet


@pytest.mark.parametrize("seed", range(6))
def test_release_level_is_the_threshold_at_which_the_rule_releases(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ends = np.cumsum(rng.choice([1.0, 2.0], 40))  # uneven strides, like a stream's last window
    scores = rng.uniform(0.0, 1.0, 40) ** 0.3
    def released(t: float, m: float) -> bool:
        norm = normalise(scores[:, None], np.array([t]))  # as the detector sees them
        above, near = norm >= DECISION_THRESHOLD, norm >= DIP_FLOOR
        return bool((~held_windows(above, ends, [m], near)[:, 0] & above[:, 0]).any())

    for m in (0.0, 2.0, 6.0, 10.0):
        level = release_level(scores, ends, m)
        assert [released(level * (1 - 1e-7), m), released(level * (1 + 1e-7), m)] == [
            True, False], (m, level)
    assert release_level(scores[:3], ends[:3], 60.0) == 0.0  # too short to ever release


def test_a_sustained_class_is_dated_from_its_run_but_never_into_the_previous_event() -> None:
    """``since_s`` (the end of the released class's first window) dates the new event; an
    earlier event that ended inside that run keeps its span (no overlap)."""
    tracker = EventTracker(EventConfig(threshold=0.5, cooldown_s=0.0), STRIDE)
    out = []
    for start, end in windows(40.0):
        p = 0.9 if end <= 13.0 or end >= 27.0 else 0.1  # a first event, then quiet
        since = 9.0 if end == 27.0 else None  # a run that began with the window [4, 9)
        out += tracker.update(start, end, p, since_s=since)
    out += tracker.close(40.0)
    (a_start, a_end), (b_start, _) = [(t.event.start_s, t.event.end_s) for t in out
                                      if t.kind == "end"]
    assert a_start == 0.0 and b_start == pytest.approx(a_end) and a_end < 25.0


def test_a_long_persistence_at_a_fine_stride_is_still_dated_from_its_start() -> None:
    """min_seconds 60 with windows every 50 ms: 1,200+ windows back to the run's first one
    (the tracker's memory of onsets used to hold 128, then 1024: dated 60 s late)."""
    stride, sound = 0.05, (10.0, 90.0)
    persistence = Persistence([60.0])
    tracker = EventTracker(EventConfig(threshold=DECISION_THRESHOLD), stride)
    starts = []
    for start in np.arange(0.0, 100.0, stride):
        end = start + WINDOW
        row = np.array([0.9 if start < sound[1] and sound[0] < end else 0.1])
        held = persistence.step(row >= DECISION_THRESHOLD, end, row >= DIP_FLOOR)
        since = persistence.run_since(0) if not held[0] and row[0] >= 0.5 else None
        starts += [t.event.start_s for t in tracker.update(start, end, float(hold(row, held)[0]),
                                                           since_s=since) if t.kind == "start"]
    assert len(starts) == 1 and starts[0] == pytest.approx(10.0, abs=0.1), starts
