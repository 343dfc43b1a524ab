"""Window loudness: the level a window is measured at, the gain that raises a quiet one, and
gain.onnx against the mn04 front end run on the scaled audio itself."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.loudness import GAIN_INPUTS, active_power, frame_powers, raise_db

RATE = 32_000


def sine(dbfs: float, seconds: float = 5.0) -> np.ndarray:
    """A 1 kHz sine whose power is ``dbfs`` (mean square re full scale)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sqrt(2 * 10 ** (dbfs / 10)) * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


@pytest.mark.parametrize("level, gain", [(-30.0, 10.0), (-38.0, 18.0), (-55.0, 20.0),
                                         (-20.0, 0.0), (-6.0, 0.0)])
def test_quiet_windows_are_raised_toward_the_target_and_loud_ones_never_lowered(
        level: float, gain: float) -> None:
    assert raise_db(frame_powers(sine(level), RATE), -20.0, 20.0) == pytest.approx(gain, abs=0.01)


def test_a_short_sound_is_measured_by_itself_not_by_the_quiet_room() -> None:
    room = sine(-60.0)
    bark = room.copy()
    bark[RATE: RATE + RATE // 2] = sine(-24.0, 0.5)  # 0.5 s of a 5 s window
    # its loudest 20 % of 50 ms frames: half the bark, half the room → about -27 dBFS
    assert 10 * np.log10(active_power(bark, RATE)) == pytest.approx(-27.0, abs=0.1)
    assert raise_db(frame_powers(bark, RATE), -20.0, 20.0) == pytest.approx(7.0, abs=0.1)
    assert raise_db(frame_powers(np.zeros(RATE, np.float32), RATE), -20.0, 20.0) == 20.0
    assert raise_db([], -20.0, 20.0) == 20.0  # nothing heard: raised as silence
    short = frame_powers(sine(-20.0, 0.01), RATE)  # under one 50 ms frame: one frame
    assert short.size == 1 and raise_db(short, -20.0, 20.0) == pytest.approx(0.0, abs=0.01)


@pytest.mark.parametrize("gain_db", [0.0, 6.0, 20.0])
def test_gain_graph_equals_the_front_end_on_scaled_audio(gain_db: float) -> None:
    """Tolerance 1e-4 on the normalised log-mel ((log(mel + 1e-5) + 4.5) / 5, here -1.4 …
    1.2; measured 2.3e-5 at +20 dB): float32 exp/log of the inverted mel against the float32
    front end."""
    import torch

    from export.mn04 import LogMelFrontEnd, MN04Frames

    front = LogMelFrontEnd().eval()
    rng = np.random.default_rng(3)
    audio = np.concatenate([0.01 * rng.standard_normal(RATE), sine(-45.0, 1.0)])[None]
    with torch.no_grad():
        log_mel = front(torch.from_numpy(audio.astype(np.float32))).numpy()
        scaled = front(torch.from_numpy((audio * 10 ** (gain_db / 20)).astype(np.float32)))
    session = ort.InferenceSession(MN04Frames.gain_graph().SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {GAIN_INPUTS[0]: log_mel,
                             GAIN_INPUTS[1]: np.array([gain_db], np.float32)})[0]
    assert got.shape == log_mel.shape
    np.testing.assert_allclose(got, scaled.numpy(), rtol=0, atol=1e-4)


def test_int8_calibration_chunks_are_each_raised_by_their_own_level(tmp_path) -> None:
    """training.quantize calibrates the backbone on what it will read: a -40 dBFS chunk's
    log-mel raised by +20 dB, a -10 dBFS one left as it is (atol 1e-4, as above)."""
    import onnx
    import torch

    from export.mn04 import LogMelFrontEnd, MN04Frames
    from training.quantize import raised

    graph = tmp_path / "gain.onnx"
    onnx.save(MN04Frames.gain_graph(), str(graph))
    audio = np.stack([sine(-40.0, 1.0), sine(-10.0, 1.0)])
    front = LogMelFrontEnd().eval()
    with torch.no_grad():
        log_mels = front(torch.from_numpy(audio)).numpy()
        expected = front(torch.from_numpy(audio * np.float32([[10.0], [1.0]]))).numpy()
    got = raised(log_mels, audio, RATE, graph, -20.0, 20.0)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
