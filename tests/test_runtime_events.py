"""The event state machine (pure): one event per danger run, hysteresis, min duration, cooldown."""

from __future__ import annotations

from edge_runtime.events import EventConfig, EventTracker, Transition


def feed(probs: list[float], config: EventConfig, window: int = 5) -> list[Transition]:
    """Windows of ``window`` s ending at 1, 2, 3 ... s (hop 1 s) with the given p(danger)."""
    tracker = EventTracker(config, hop_s=1.0)
    out: list[Transition] = []
    for i, p in enumerate(probs):
        end = float(window + i)
        out += tracker.update(end - window, end, p, payload=i)
    out += tracker.close(float(window + len(probs) - 1))
    return out


def ends(transitions: list[Transition]):
    return [t.event for t in transitions if t.kind == "end"]


def test_ten_second_run_is_one_event_with_onset_and_offset_times() -> None:
    probs = [0.0] * 5 + [0.9] * 10 + [0.0] * 8
    trans = feed(probs, EventConfig(threshold=0.5))
    assert [t.kind for t in trans] == ["start", "end"]
    ev = ends(trans)[0]
    # first positive window ends at 10 s → onset is its newest chunk, [9, 10)
    assert ev.start_s == 9.0
    # last positive window spans [14, 19) → offset is the end of its oldest chunk
    assert ev.end_s == 15.0
    assert ev.windows == 10 and abs(ev.mean - 0.9) < 1e-9 and ev.peak == 0.9
    assert ev.peak_payload == 5


def test_dip_within_cooldown_merges_but_long_gap_splits() -> None:
    cfg = EventConfig(threshold=0.5, cooldown_s=2.0)
    merged = feed([0.9] * 4 + [0.1] * 2 + [0.9] * 4 + [0.0] * 6, cfg)
    assert len(ends(merged)) == 1
    split = feed([0.9] * 4 + [0.1] * 6 + [0.9] * 4 + [0.0] * 6, cfg)
    assert len(ends(split)) == 2
    assert ends(split)[0] is not ends(split)[1]  # two events (numbered when reported)
    assert ends(split)[0].end_s < ends(split)[1].start_s


def test_hysteresis_keeps_event_open_between_off_and_on_thresholds() -> None:
    wobble = [0.9, 0.55, 0.45, 0.55, 0.45, 0.9, 0.0, 0.0, 0.0, 0.0]
    with_h = feed(wobble, EventConfig(threshold=0.6, hysteresis=0.2, cooldown_s=0.0))
    assert len(ends(with_h)) == 1 and ends(with_h)[0].windows == 6
    no_h = feed(wobble, EventConfig(threshold=0.6, hysteresis=0.0, cooldown_s=0.0))
    assert len(ends(no_h)) == 2


def test_values_between_thresholds_do_not_open_an_event() -> None:
    assert feed([0.45] * 10, EventConfig(threshold=0.5, hysteresis=0.1)) == []


def test_minimum_duration_drops_blips() -> None:
    cfg = EventConfig(threshold=0.5, min_duration_s=3.0)
    assert feed([0.0, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0], cfg) == []
    trans = feed([0.0, 0.9, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0], cfg)
    assert [t.kind for t in trans] == ["start", "end"]
    # the start is reported once the 3rd positive window arrives, with the original onset
    assert trans[0].event.start_s == 5.0


def test_close_finishes_an_open_event_at_the_end_of_the_audio() -> None:
    tracker = EventTracker(EventConfig(threshold=0.5), hop_s=1.0)
    assert [t.kind for t in tracker.update(0.0, 5.0, 0.9)] == ["start"]
    tracker.update(1.0, 6.0, 0.9)
    closed = tracker.close(6.0)
    assert [t.kind for t in closed] == ["end"]
    assert closed[0].event.start_s == 0.0 and closed[0].event.end_s == 6.0
    assert tracker.close(7.0) == []


def test_first_window_onset_is_window_start_later_ones_newest_chunk() -> None:
    tracker = EventTracker(EventConfig(threshold=0.5), hop_s=1.0)
    assert tracker.update(0.0, 5.0, 0.9)[0].event.start_s == 0.0
    tracker = EventTracker(EventConfig(threshold=0.5), hop_s=1.0)
    tracker.update(0.0, 5.0, 0.1)
    assert tracker.update(1.0, 6.0, 0.9)[0].event.start_s == 5.0


def test_chunk_scores_place_the_event_where_the_danger_is() -> None:
    """A 5 s window crosses the threshold only with 4 s of danger (window ending at 14 s); the
    chunks' own scores put the event at 10-15 s instead of 13-14 s."""
    danger = set(range(10, 15))  # chunks 10..14 hold the danger: 10 s to 15 s
    tracker = EventTracker(EventConfig(threshold=0.9, hysteresis=0.1), hop_s=1.0)
    out = []
    for end in range(5, 31):
        chunks = range(end - 5, end)
        inside = sum(c in danger for c in chunks)
        p = {4: 0.95, 5: 1.0}.get(inside, 0.2 * inside)  # diluted windows stay low
        out += tracker.update(end - 5.0, float(end), p,
                              chunk_probs=[1.0 if c in danger else 0.0 for c in chunks])
    out += tracker.close(30.0)
    ends = [t.event for t in out if t.kind == "end"]
    assert len(ends) == 1
    assert (ends[0].start_s, ends[0].end_s) == (10.0, 15.0)


def test_without_chunk_scores_the_newest_chunk_marks_the_onset() -> None:
    tracker = EventTracker(EventConfig(threshold=0.9), hop_s=1.0)
    tracker.update(8.0, 13.0, 0.5)
    (start,) = tracker.update(9.0, 14.0, 0.95)
    assert start.event.start_s == 13.0


def test_long_event_sends_rate_limited_updates_between_start_and_end() -> None:
    probs = [0.0] * 2 + [0.9] * 25 + [0.0] * 6
    trans = feed(probs, EventConfig(threshold=0.5, update_every_s=10.0))
    kinds = [t.kind for t in trans]
    assert kinds == ["start", "update", "update", "end"]
    assert len({id(t.event) for t in trans}) == 1
    assert feed(probs, EventConfig(threshold=0.5))[1].kind == "end"  # 0: no updates


def test_record_carries_id_state_and_class_when_the_model_has_classes() -> None:
    from datetime import UTC, datetime

    from edge_runtime.lifecycle import StreamInfo, build_record

    (start,) = feed([0.9], EventConfig(threshold=0.5))[:1]
    info = StreamInfo("a.wav", True, datetime(2026, 1, 1, tzinfo=UTC), "f" * 64, 32000)
    plain = build_record(start.event, info, "start").to_dict()
    named = build_record(start.event, info, "end", [("Beep", 0.5)], "smoke_alarm").to_dict()
    assert "class" not in plain and named["class"] == "smoke_alarm"
    assert plain["id"] == named["id"] and len(plain["id"]) == 16
    assert (plain["state"], named["state"]) == ("start", "end")
    assert plain["start"] == "2026-01-01T00:00:00.000Z" and plain["offset_start_s"] == 0.0
    assert named["tags"] == [{"name": "Beep", "probability": 0.5}]


def located_event(danger: range, stride: int, total: int = 30) -> tuple[float, float]:
    """One event from 5 s windows every ``stride`` chunks of 1 s: a window is danger when any of
    its chunks is, each chunk's own score is 1 inside ``danger`` and 0 outside."""
    tracker = EventTracker(EventConfig(threshold=0.5), hop_s=float(stride), chunk_s=1.0)
    out: list[Transition] = []
    for start in range(0, total - 5 + 1, stride):
        chunks = range(start, start + 5)
        hot = [1.0 if c in danger else 0.0 for c in chunks]
        out += tracker.update(float(start), start + 5.0, 0.9 if any(hot) else 0.1,
                              chunk_probs=hot)
    out += tracker.close(float(total))
    (event,) = ends(out)
    return event.start_s, event.end_s


def test_a_window_stride_does_not_stretch_events_that_chunks_place() -> None:
    """Windows every 2 chunks: chunk scores still place the event to the chunk — a 1 s sound
    is not reported as 2 s, a 5 s one does not end 1 s late (the stride is the decision
    interval, the chunk the resolution)."""
    for danger in (range(10, 11), range(11, 12), range(10, 15), range(3, 4), range(11, 14)):
        expected = (float(danger.start), float(danger.stop))
        assert located_event(danger, 1) == expected
        assert located_event(danger, 2) == expected, danger


def test_events_to_dev_null_are_not_a_sink_failure() -> None:
    """``--events /dev/null`` logged "JsonlSink.on_start failed: OSError [Errno 22]" at every
    event (fsync on a device); nothing to make durable there."""
    from datetime import UTC, datetime

    from edge_runtime.lifecycle import StreamInfo, build_record
    from edge_runtime.sinks import JsonlSink

    (start,) = feed([0.9], EventConfig(threshold=0.5))[:1]
    info = StreamInfo("a.wav", True, datetime(2026, 1, 1, tzinfo=UTC), "f" * 64, 32000)
    sink = JsonlSink("/dev/null", fresh=True)
    sink.on_start(build_record(start.event, info, "start"))
    sink.on_end(build_record(start.event, info, "end"))


def test_a_live_stream_is_timed_across_its_gaps() -> None:
    """A camera stream that paused 7 s and went on live: what followed was dated 7 s early
    (the sample count only). Audio more than GAP_S behind the wall clock is timed forward from
    where that read began; jitter under it is not; a fast input is still timed back."""
    from datetime import UTC, datetime, timedelta

    from edge_runtime.lifecycle import GAP_S, StreamInfo

    base = datetime(2026, 1, 1, tzinfo=UTC)
    info = StreamInfo("cam", False, base, "f" * 64, 32000)

    def at(offset: float) -> float:
        return (datetime.fromisoformat(info.time_at(offset).replace("Z", "+00:00"))
                - base).total_seconds()

    for k in range(1, 101):  # 10 s in real time, read in 0.1 s blocks with up to 1 s of jitter
        info.keep_up(k / 10, base + timedelta(seconds=k / 10 + (k % 7) / 7))
    assert info.lead_s == 0.0 and abs(at(5.0) - 5.0) < 1e-3
    for k in range(1, 31):  # the stream paused 7 s, then 3 s more arrive live
        info.keep_up(10 + k / 10, base + timedelta(seconds=17 + k / 10))
    assert abs(at(5.0) - 5.0) < 1e-3 and abs(at(9.99) - 9.99) < 1e-3
    assert abs(at(10.05) - 17.05) < 1e-3 and abs(at(12.0) - 19.0) < 1e-3
    assert GAP_S > 1.0  # buffering and jitter are not gaps
    times = [at(x / 100) for x in range(1300)]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))  # never backwards
