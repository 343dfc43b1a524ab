"""Robustness test-set construction: SNR mixing, gain, coloured noise, conditions, synthesis."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from training import robustness as rb

SR = 32_000


def sine(freq: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("snr", [10.0, 0.0, -10.0, 3.5])
def test_mix_has_the_requested_snr(snr: float) -> None:
    signal = sine(440, amp=0.05)
    background = np.random.default_rng(1).standard_normal(SR // 3).astype(np.float32) * 0.01
    mix = rb.mix_at_snr(signal, background, snr)
    assert mix.shape == signal.shape
    residual = mix.astype(np.float64) - signal  # quiet enough: no peak limiting
    assert rb.snr_db(signal, residual) == pytest.approx(snr, abs=1e-3)


def test_peak_limited_mix_keeps_its_snr() -> None:
    signal = sine(440, amp=0.9)
    background = np.random.default_rng(2).standard_normal(SR).astype(np.float32)
    mix = rb.mix_at_snr(signal, background, -10.0)
    assert np.abs(mix).max() == pytest.approx(rb.PEAK_LIMIT, abs=1e-6)
    unlimited = signal + rb.scale_to_snr(signal, background, -10.0)
    ratio = np.abs(mix).max() / np.abs(unlimited).max()
    np.testing.assert_allclose(mix, unlimited * ratio, atol=1e-5)
    scaled_signal = signal * ratio
    assert rb.snr_db(scaled_signal, mix - scaled_signal) == pytest.approx(-10.0, abs=1e-3)


def test_silent_input_has_no_snr() -> None:
    with pytest.raises(ValueError, match="silent"):
        rb.scale_to_snr(sine(440), np.zeros(SR, np.float32), 0.0)


def test_gain_scales_and_clips() -> None:
    x = sine(1000, amp=0.5)
    quiet = rb.apply_gain(x, -10.0)
    assert 10 * np.log10(rb.power(quiet) / rb.power(x)) == pytest.approx(-10.0, abs=1e-4)
    loud = rb.apply_gain(x, 10.0)
    assert np.abs(loud).max() == 1.0
    assert (np.abs(loud) == 1.0).mean() > 0.3  # 1.58 peak → clipped over half the time


def octave_power(x: np.ndarray, low: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(freqs >= low) & (freqs < 2 * low)].sum())


def test_pink_noise_has_equal_power_per_octave_and_white_does_not() -> None:
    rng = np.random.default_rng(3)
    pink = rb.pink_noise(10 * SR, rng)
    white = rb.white_noise(10 * SR, rng)
    assert rb.power(pink) == pytest.approx(1.0, rel=1e-6)
    assert octave_power(pink, 250) / octave_power(pink, 4000) == pytest.approx(1.0, rel=0.1)
    assert octave_power(white, 250) / octave_power(white, 4000) == pytest.approx(1 / 16, rel=0.1)


def test_fit_length_tiles_and_crops() -> None:
    np.testing.assert_array_equal(rb.fit_length(np.array([1, 2, 3]), 7), [1, 2, 3, 1, 2, 3, 1])
    np.testing.assert_array_equal(rb.fit_length(np.arange(10), 4), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="empty"):
        rb.fit_length(np.array([]), 4)


def test_conditions_label_and_key_their_sounds_consistently() -> None:
    rng = np.random.default_rng(0)

    def clip(i: int) -> np.ndarray:
        return (0.1 * np.random.default_rng(i).standard_normal(SR)).astype(np.float32)

    fa = rb.FoldAudio(danger={"d1": clip(1), "d2": clip(2)}, safe={"s1": clip(3), "s2": clip(4),
                      "s3": clip(5)}, other={"o1": clip(6)},
                      category={"d1": "dog", "d2": "dog", "s1": "rain", "s2": "rain",
                                "s3": "rain", "o1": "rooster"})
    speech = {"sp": clip(7)}
    conds = rb.fold_conditions(fa, speech, {}, rng)
    clean = conds["clean (held-out ESC fold)"]
    assert [i.label for i in clean] == [1, 1, 0, 0, 0]
    mixes = conds["danger in safe backgrounds @ -10 dB"]
    assert sum(i.label for i in mixes) == 2 * rb.BACKGROUNDS_PER_CLIP
    assert sum(1 - i.label for i in mixes) == 3
    other_mix = conds["danger in other ESC sounds @ +0 dB"]
    assert sum(i.label for i in other_mix) == 2  # only one other clip to mix into
    assert "· other: rooster alone" in conds
    assert "tones, chords, beeps, noise alone (sox)" not in conds  # no sox sounds given
    # The scorer caches by key: one key must always mean the same audio.
    seen: dict[str, np.ndarray] = {}
    for items in conds.values():
        for item in items:
            audio = item.make()
            if item.key in seen:
                np.testing.assert_array_equal(seen[item.key], audio)
            seen[item.key] = audio
            long = item.key.startswith(("short:", "bg10:"))  # two backgrounds end to end
            assert audio.dtype == np.float32 and audio.shape == ((2 if long else 1) * SR,)


def test_condition_metrics_counts_decisions() -> None:
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    m = rb.condition_metrics(y, p, np.full(5, 0.8))
    assert m["at_threshold"]["danger_recall"] == pytest.approx(1 / 3)
    assert m["at_threshold"]["false_alarm_rate"] == 0.0
    assert m["at_0.5"]["danger_recall"] == pytest.approx(2 / 3)
    assert m["at_0.5"]["false_alarm_rate"] == 0.5
    assert m["roc_auc"] == pytest.approx(4 / 6)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed "
                    "(apt-get install espeak-ng)")
def test_espeak_speech_is_five_seconds_of_sound(tmp_path) -> None:
    speech = rb.synth_speech(tmp_path)
    assert len(speech) == len(rb.SPEECH) * len(rb.SPEECH_VARIANTS)
    for audio in speech.values():
        assert audio.shape == (5 * SR,)
        assert rb.power(audio) > 1e-5


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed (apt-get install sox)")
def test_sox_sounds_are_generated(tmp_path) -> None:
    sounds = rb.synth_sox(tmp_path)
    assert set(sounds) == {f"sox_{name}" for name in rb.SOX_SOUNDS}
    for audio in sounds.values():
        assert audio.shape == (5 * SR,)
        assert rb.power(audio) > 1e-5
    tone = sounds["sox_sine_1k"]
    peak = np.argmax(np.abs(np.fft.rfft(tone)))
    assert np.fft.rfftfreq(tone.size, 1 / SR)[peak] == pytest.approx(1000, abs=1)


def test_short_event_places_the_loudest_part_at_its_offset() -> None:
    from training.robustness import short_event

    rate = 32_000
    danger = np.zeros(5 * rate, np.float32)
    danger[3 * rate : int(3.5 * rate)] = 0.5  # the loud part: 3.0–3.5 s
    background = np.full(10 * rate, 0.01, np.float32)
    out = short_event(danger, background, seconds=2.0, at_s=4.3, rate=rate)
    assert out.size == background.size
    loud = np.flatnonzero(out > 0.2) / rate
    assert loud.min() >= 4.3 and loud.max() < 6.3  # inside the 2 s segment placed at 4.3 s
    assert np.allclose(out[: int(4.3 * rate)], 0.01)
