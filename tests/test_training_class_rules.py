"""The class model's training rules, on small synthetic data (no backbone needed): mixing SNR,
recording-disjoint CV with mixes, the head gate (ONNX graph vs its numpy twin), zero-shot
threshold ceilings, thresholds of persisted classes from what long recordings hold."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf

from training import class_build as cb
from training.class_checks import own_recall, report_own_recall, report_unheard, unheard
from training.class_model import (
    ZERO_SHOT_PERSISTED_THRESHOLD,
    ClassPlan,
    _scores_graph,
    class_model_onnx,
    class_scores,
    features,
    head_gates,
    plan_classes,
)
from training.class_thresholds import ScoredWindows, choose_thresholds, zero_shot_ceilings
from training.dataset import Clip
from training.negatives import RATE, active_power, mix, mix_clips


def test_mix_snr_is_measured_on_the_sound_not_on_its_silence() -> None:
    rng = np.random.default_rng(0)
    signal = np.zeros(4 * RATE)
    signal[RATE:RATE + RATE // 4] = 0.1 * rng.standard_normal(RATE // 4)  # a 0.25 s bang
    background = 0.1 * rng.standard_normal(6 * RATE)
    out = mix(signal, background, 10.0, rng)
    assert np.abs(out).max() < 0.9  # no peak normalisation in this case
    back = out - signal
    snr = 10 * np.log10(active_power(signal) / np.mean(back ** 2))
    assert snr == pytest.approx(10.0, abs=0.01)
    # against the whole clip's mean (0.25 s of sound in 4 s) the same mix is a 3 dB "SNR"
    whole = 10 * np.log10(np.mean(signal ** 2) / np.mean(back ** 2))
    assert whole == pytest.approx(10.0 - 10 * np.log10(5), abs=0.1)


def test_a_short_sound_is_mixed_into_a_whole_window_of_background() -> None:
    rng = np.random.default_rng(5)
    bang = np.zeros(RATE // 2)
    bang[: RATE // 10] = 0.5 * np.sign(np.sin(np.arange(RATE // 10)))  # 0.1 s of sound in 0.5 s
    background = 0.1 * np.sin(2 * np.pi * 50 * np.arange(10 * RATE) / RATE)
    offsets = set()
    for _ in range(5):
        out = mix(bang, background, 30.0, rng, min_samples=5 * RATE)
        assert out.size == 5 * RATE  # a device window, as a stream's window holds the sound
        loud = np.flatnonzero(np.abs(out) > 0.3)
        offsets.add(int(loud[0]) // (RATE // 10))
        assert loud[-1] - loud[0] < RATE // 10  # the sound once, whole, somewhere inside
        back = np.delete(out, np.arange(loud[0], loud[0] + RATE // 10))
        assert np.sqrt(np.mean(back ** 2)) == pytest.approx(0.5 / 10 ** 1.5, rel=0.05)
    assert len(offsets) > 1  # at random offsets
    long = rng.standard_normal(6 * RATE) * 0.1
    assert mix(long, background, 10.0, rng, min_samples=5 * RATE).size == 6 * RATE


def _flac(path: Path, audio: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio.astype(np.float32), RATE)
    return path


def test_a_mix_records_its_background_and_belongs_to_both_groups(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    dog = Clip("extra/dog.flac", _flac(tmp_path / "dog.flac", 0.3 * rng.standard_normal(RATE)),
               0, "dog_bark", 1, "dog_bark", "extra:fold1")
    street = Clip("extra/street.flac",
                  _flac(tmp_path / "street.flac", 0.05 * rng.standard_normal(2 * RATE)),
                  0, "street_music", 0, None, "extra:fold3")
    mixes = mix_clips([dog], [street], tmp_path / "mixes", per_clip=2, seed=0)
    assert len(mixes) == 2 and all(m.background == street.filename for m in mixes)
    by_name = {c.filename: c for c in [dog, street, *mixes]}
    assert cb.cv_groups(mixes[0], by_name) == {"extra:fold1", "extra:fold3"}
    assert cb.cv_groups(street, by_name) == {"extra:fold3"}
    # the same choice again reuses the files; the name keys background and SNR
    again = mix_clips([dog], [street], tmp_path / "mixes", per_clip=2, seed=0)
    assert [m.path for m in again] == [m.path for m in mixes]


def _plan() -> ClassPlan:
    return ClassPlan(names=["a", "b", "z"], trained=["a", "b"], zero_shot={"z": [3, 4]},
                     use_head=True, gate_labels={"a": [0, 1], "b": [2], "z": [3, 4]},
                     gates={"a": 0.2})


def test_group_oof_never_trains_on_a_mix_of_the_tested_recordings() -> None:
    rng = np.random.default_rng(2)
    safe_b = rng.normal(0.0, 1.0, (10, 4)) + np.array([0, 0, 5, 0])  # group B, safe
    x = np.vstack([rng.normal(0.0, 1.0, (30, 4)),                       # group A, safe
                   rng.normal(0.0, 1.0, (30, 4)) + np.array([4, 0, 0, 0]),  # group A, danger
                   safe_b,
                   safe_b + rng.normal(0.0, 0.05, safe_b.shape)])          # mixes over B
    y = np.array([0] * 30 + [1] * 30 + [0] * 10 + [1] * 10)
    real = np.array([True] * 70 + [False] * 10)
    plan = ClassPlan(names=["a"], trained=["a"])
    w = np.ones(len(y))
    honest = [frozenset({"A"})] * 60 + [frozenset({"B"})] * 10 + [frozenset({"A", "B"})] * 10
    leaky = [frozenset({"A"})] * 60 + [frozenset({"B"})] * 10 + [frozenset({"A"})] * 10
    oof = cb.group_oof("logreg", 0, x, y, w, honest, real, None, plan)
    assert np.isnan(oof[70:]).all()  # mixes are never scored
    assert np.nanmax(oof[60:70]) < 0.5
    # the rule matters: trained on mixes over the very recordings it scores, they look danger
    assert np.nanmin(cb.group_oof("logreg", 0, x, y, w, leaky, real, None, plan)[60:70]) > 0.5


def test_head_gate_graph_matches_numpy_and_zeroes_unheard_classes() -> None:
    plan = _plan()
    rng = np.random.default_rng(3)
    n, labels = 64, 8
    proba = rng.dirichlet(np.ones(3), n).astype(np.float32)
    head = rng.uniform(0.0, 0.4, (n, labels)).astype(np.float32)
    graph = _scores_graph(plan, 3, labels)
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"probabilities": proba, "head_probs": head})[0]
    want = class_scores(proba, head, plan, np.array([0, 1, 2]))
    np.testing.assert_allclose(got, want, atol=1e-7)
    unheard = head[:, [0, 1]].max(axis=1) < 0.2
    assert unheard.any() and (~unheard).any()
    assert (got[unheard, 0] == 0).all()
    np.testing.assert_allclose(got[~unheard, 0], proba[~unheard, 1])
    np.testing.assert_allclose(got[:, 1], proba[:, 2])  # no gate: the classifier's own score


def test_class_graph_reads_the_head_output_and_holds_no_copy_of_the_head() -> None:
    from edge_runtime.classes import HEAD_PROBS_INPUT
    from training.class_build import fit_pipeline

    plan = _plan()
    rng = np.random.default_rng(4)
    n, dim, labels = 90, 6, 8
    x = rng.normal(0.0, 1.0, (n, dim)).astype(np.float32)
    head = rng.uniform(0.0, 0.4, (n, labels)).astype(np.float32)
    y = np.repeat([0, 1, 2], n // 3)
    x[y == 1, 0] += 3.0
    x[y == 2, 1] += 3.0
    pipe = fit_pipeline("logreg", 0, features(x, head), y, np.ones(n))
    model = class_model_onnx(pipe, plan, dim, labels)
    assert [i.name for i in model.graph.input] == ["embedding", HEAD_PROBS_INPUT]
    # only the classifier's own weights: no 527-wide head matrix inside
    assert max(np.prod(t.dims) for t in model.graph.initializer) <= 3 * (dim + labels)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"embedding": x, HEAD_PROBS_INPUT: head})[0]
    want = class_scores(pipe.predict_proba(features(x, head)), head, plan, pipe.classes_)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_head_gates_are_a_low_percentile_of_each_class_training_clips() -> None:
    plan = _plan()
    evidence = np.linspace(0.01, 1.0, 100)
    head = np.zeros((102, 8), np.float32)
    head[:100, 1] = evidence
    head[100:, 2] = 0.5
    danger_class = np.array(["a"] * 100 + ["b", "b"])
    files = np.array([f"f{i}" for i in range(102)])
    real = np.ones(102, bool)
    gates = head_gates(plan, head, danger_class, files, real)
    assert gates["a"] == pytest.approx(np.percentile(evidence, 2.0), rel=1e-5)
    assert set(gates) == {"a", "b"}  # zero-shot z has no gate


def _one_window_each(files: np.ndarray) -> ScoredWindows:
    """Rows as consecutive windows of their file (5 s windows every 1 s chunk, stride 2)."""
    index: dict[str, int] = {}
    window = []
    for f in files:
        window.append(index.get(f, 0))
        index[f] = window[-1] + 1
    return ScoredWindows.of(files, np.array(window), 5, 2, 1.0)


def test_zero_shot_threshold_stays_under_the_weakest_real_recording() -> None:
    plan = _plan()
    head = np.zeros((6, 8), np.float32)
    head[:, 3] = [0.9, 0.40, 0.45, 0.0, 0.0, 0.0]  # alarm.wav (2 windows), other.wav, safe
    danger_class = np.array(["z", "z", "z", "", "", ""])
    files = np.array(["alarm.wav", "alarm.wav", "other.wav", "s1", "s2", "s3"])
    windows = _one_window_each(files)
    ceilings = zero_shot_ceilings(plan, head, danger_class, windows, np.ones(6, bool))
    # alarm.wav: a stream that scores only its 2nd window (stride 2, phase 1) hears 0.40
    assert ceilings == {"z": pytest.approx(0.40)}
    y = np.array([-1, -1, -1, 0, 0, 0])
    oof = np.zeros((6, 3), np.float32)
    oof[3:, 2] = [0.8, 0.7, 0.6]  # safe files the head hears as z
    t = choose_thresholds(plan, oof, y, windows, 0.0, ceilings)
    assert t[2] == pytest.approx(0.40 - 1e-4)
    assert choose_thresholds(plan, oof, y, windows, 0.0)[2] > 0.6


def test_a_persisted_class_threshold_comes_from_what_long_safe_audio_holds() -> None:
    """z lasts 6 s: short safe clips peaking at 0.8 cannot raise it (4 s: one window); a long
    safe recording holding 0.25 over 6 s (with a 0.9 blip) can; a long real alarm at 0.5 in
    its even windows and 0.3 in two of every three odd ones holds 0.3 when its scored windows
    are the odd ones (two dips in a row break a run; one does not): its threshold stays under
    that."""
    plan = _plan()
    plan.min_seconds = {"z": 6.0}
    rng = np.random.default_rng(4)
    long_safe = np.full(60, 0.05)
    long_safe[20:28] = 0.25  # windows 20..27: scored ones 20, 22, 24, 26 end 6 s apart
    long_safe[40] = 0.9  # a 1 s blip: one scored window
    alarm = np.where(np.isin(np.arange(30) % 6, (1, 3)), 0.3, 0.5)  # odd phase: 0.3 0.3 0.5
    short = rng.uniform(0.6, 0.8, 200)  # 200 four-second safe clips, one window each
    files = np.array(["home.flac"] * 60 + ["alarm.flac"] * 30
                     + [f"clip{i}.flac" for i in range(200)])
    windows = _one_window_each(files)
    head = np.zeros((files.size, 8), np.float32)
    head[:, 3] = np.concatenate([long_safe, alarm, short])
    danger_class = np.array([""] * 60 + ["z"] * 30 + [""] * 200)
    y = np.array([0] * 60 + [-1] * 30 + [0] * 200)
    oof = np.zeros((files.size, 3), np.float32)
    oof[:, 2] = head[:, 3]
    oof[60:90] = np.nan
    ceilings = zero_shot_ceilings(plan, head, danger_class, windows, np.ones(files.size, bool))
    assert ceilings == {"z": pytest.approx(0.3)}  # the worst stride phase
    t = choose_thresholds(plan, oof, y, windows, 0.0, ceilings)[2]
    assert t == pytest.approx(max(0.25 + 1e-4, ZERO_SHOT_PERSISTED_THRESHOLD))
    plan.min_seconds = {}  # the same data without persistence: above the short clips' peaks
    assert choose_thresholds(plan, oof, y, windows, 0.0)[2] > short.max()


def test_a_threshold_that_loses_most_of_its_class_is_warned_about_naming_its_setter(
        caplog: pytest.LogCaptureFixture) -> None:
    """Ten recordings of class a score 0.6-0.9 out of group; three of 200 safe files hold
    0.97-0.99 (a user's TV like their own alarm): the threshold rises above every recording
    of a, and the build says so, naming the safe file that set it. Without them no warning."""
    plan = _plan()
    rng = np.random.default_rng(7)
    own = np.linspace(0.6, 0.9, 10)
    safe = rng.uniform(0.0, 0.3, 200)
    safe[[5, 50, 150]] = [0.97, 0.98, 0.99]
    files = np.array([f"a{i}.wav" for i in range(10)] + [f"s{i}.wav" for i in range(200)])
    windows = _one_window_each(files)
    danger_class = np.array(["a"] * 10 + [""] * 200)
    y = np.array([1] * 10 + [0] * 200)
    real = np.ones(files.size, bool)
    oof = np.zeros((files.size, 3), np.float32)
    oof[:, 0] = np.concatenate([own, safe])
    for loud, warned in ((True, True), (False, False)):
        if not loud:
            oof[10:, 0] = np.minimum(oof[10:, 0], 0.3)
        setters: dict[str, tuple[str, float]] = {}
        thresholds = choose_thresholds(plan, oof, y, windows, 0.0, None, setters)
        (a,) = [r for r in own_recall(plan, oof, windows, danger_class, real, thresholds)
                if r.name == "a"]
        assert a.recordings == 10 and a.reached_at_default == 10
        caplog.clear()
        report_own_recall([a], dict(zip(plan.names, thresholds, strict=True)), setters)
        warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
        if warned:
            assert a.reached == 0 and a.missed[0] == ("a0.wav", pytest.approx(0.6))
            # 0.5 % of 200 safe files may pass: the loudest; the next sets the threshold
            assert setters["a"] == ("s50.wav", pytest.approx(0.98))
            (line,) = warnings
            assert "set by the safe recording s50.wav, 0.980" in line
            assert "leaves 10 of its 10 training recordings undetected" in line
        else:
            assert a.reached == 10 and warnings == []
    oof[[15, 60, 160], 0] = [0.997, 0.998, 0.999]  # over the highest threshold: capped at it
    setters = {}
    assert choose_thresholds(plan, oof, y, windows, 0.0, None, setters)[0] == 0.995
    assert setters["a"] == ("s50.wav", pytest.approx(0.998))  # still named


def test_a_folder_whose_own_recordings_stay_unreported_is_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    """A user's folder of 4 recordings of class a that the classifier scores 0.9 but the head
    hears under a's gate (0.2): the model trained on them still reports none, and the build
    says so for that folder (and how many the gate stopped); another folder's well-heard
    recordings of a raise nothing."""
    plan = _plan()
    files = np.array([f"mine/{i}.wav" for i in range(4)] + [f"esc/{i}.wav" for i in range(4)])
    windows = _one_window_each(files)
    proba = np.tile([0.1, 0.9, 0.0], (8, 1))
    head = np.zeros((8, 8), np.float32)
    head[:4, 0] = 0.05  # mine: under the gate
    head[4:, 1] = 0.6   # esc: heard as a
    scores = class_scores(proba, head, plan, np.array([0, 1, 2]))
    danger_class = np.array(["a"] * 8)
    folders = np.array(["mine"] * 4 + ["esc50"] * 4)
    found = unheard(plan, scores, head, windows, danger_class, folders, np.ones(8, bool),
                    [0.5, 0.5, 0.3])
    assert [(u.folder, u.name, u.recordings, len(u.missed), u.under_gate) for u in found] == [
        ("mine", "a", 4, 4, 4)]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        report_unheard(found, plan.gates, {"a": 0.5, "b": 0.5, "z": 0.3})
    (line,) = [r.message for r in caplog.records]
    assert line.startswith("mine: 4 of its 4 a recordings stay under the class's threshold "
                           "0.500 even in the model that trained on them")
    assert "4 of them under the class's gate 0.200" in line and "heard_as" in line


def test_heard_as_labels_widen_a_trained_class_gate_only(tmp_path: Path) -> None:
    from training.mapping import audioset_labels, load_mapping

    path = tmp_path / "m.toml"
    path.write_text('danger = ["dog", "siren"]\nsafe = ["rain"]\n'
                    '[classes.bark]\naudioset = ["Bark"]\ncategories = ["dog"]\n'
                    'heard_as = ["Howl"]\n'
                    '[classes.wail]\naudioset = ["Siren"]\ncategories = ["siren"]\n'
                    'heard_as = ["Whistle"]\n', "utf-8")
    index = {n: i for i, n in enumerate(audioset_labels())}
    plan = plan_classes(load_mapping(path), {"bark": 20, "wail": 2}, head_is_real=True)
    assert plan.trained == ["bark"]
    assert plan.gate_labels["bark"] == [index["Bark"], index["Howl"]]
    assert plan.zero_shot == {"wail": [index["Siren"]]}  # zero-shot scores: audioset only


@pytest.mark.parametrize("seconds", [10.5, 11.0, 12.3, 4.0])
def test_scored_windows_end_where_the_daemon_windows_end(tmp_path: Path, seconds: float) -> None:
    """Phase 0 of ScoredWindows over the rows training embeds (hop 1) = the windows a
    Detector stream with window_stride 2 scores in the same file, last one included."""
    from edge_runtime.detector import Detector
    from edge_runtime.features import embed_audio
    from edge_runtime.manifest import load_manifest
    from tests.runtime_model import SR, build_tiny_model, hiss

    model = build_tiny_model(tmp_path / "m")
    manifest = load_manifest(model)
    manifest.replace(streaming=manifest.streaming.replace(window_stride=2)).write(model)
    detector = Detector(model, provider="cpu")
    audio = hiss(seconds, amp=0.05)
    stream = detector.stream()
    scored = [s.end_s for s in stream.push(audio) + stream.finish()]
    _, spans = embed_audio(detector.sessions, audio)
    files = np.array(["f"] * len(spans))
    windows = ScoredWindows.of(files, np.array([s for s, _ in spans]), 5, 2,
                               detector.sessions.chunk_samples / SR, {"f": audio.size / SR})
    phase0 = (windows.window % 2 == 0) | windows.is_last
    np.testing.assert_allclose(windows.ends[phase0], scored, atol=1e-6)


def test_levels_take_the_best_phase_for_safe_audio_and_the_worst_for_an_alarm() -> None:
    values = np.full(40, 0.1)
    values[21:28] = 0.8  # high in windows 21..27: odd ones 21, 23, 25, 27 end 6 s apart
    files = np.array(["f"] * 40)
    windows = ScoredWindows.of(files, np.arange(40), 5, 2, 1.0)
    rows = np.ones(40, bool)
    assert windows.levels(rows, values, 6.0) == {"f": pytest.approx(0.8)}
    assert windows.levels(rows, values, 6.0, phases="worst") == {"f": pytest.approx(0.1)}
    short = ScoredWindows.of(files[:3], np.arange(3), 5, 2, 1.0)  # ends 5..7: never 6 s apart
    assert short.levels(rows[:3], values[:3], 6.0) == {}
    assert short.levels(rows[:3], np.array([0.4, 0.6, 0.5]), 6.0,
                        short="sustain", phases="worst") == {"f": pytest.approx(0.4)}
