"""Audio loading (any rate/channels → 32 kHz mono) and embedding with bad files in the set."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_runtime.audio import AudioError
from training.dataset import load_audio, read_dataset
from training.embed import cache_path, embed_clips, load_cache
from training.mapping import default_mapping

META_HEADER = "filename,fold,target,category,esc10,src_file,take\n"


def tone(seconds: float, rate: int, freq: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.size)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def make_layout(root: Path, rows: list[tuple[str, int, str]]) -> Path:
    """A tiny ESC-50 layout: meta/esc50.csv rows (filename, fold, category); no audio yet."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    lines = [f"{name},{fold},0,{cat},True,0,A\n" for name, fold, cat in rows]
    (root / "meta" / "esc50.csv").write_text(META_HEADER + "".join(lines), encoding="utf-8")
    return root


def test_load_audio_resamples_stereo_44k1_to_32k_mono(tmp_path: Path) -> None:
    left = tone(1.0, 44_100, 1000.0)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, left * 0.5], axis=1), 44_100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(audio.size - 32_000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    peak_hz = np.argmax(spectrum) * 32_000 / audio.size
    assert abs(peak_hz - 1000.0) < 2.0
    assert 0.2 < np.abs(audio).max() < 0.25  # mean of 0.3 and 0.15 amplitude channels


def test_load_audio_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage, not audio")
    with pytest.raises(AudioError, match="corrupt.wav: not a readable audio file") as exc:
        load_audio(bad)
    assert "\n" not in str(exc.value)
    with pytest.raises(AudioError, match="absent.wav: no such file"):
        load_audio(tmp_path / "absent.wav")


def test_missing_and_corrupt_files_are_skipped(cnn14_model_dir: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    rows = [("1-1-A-0.wav", 1, "dog"), ("1-2-A-10.wav", 1, "rain"),
            ("2-3-A-0.wav", 2, "dog"), ("2-4-A-10.wav", 2, "rain"),
            ("2-5-A-0.wav", 2, "dog")]
    root = make_layout(tmp_path / "esc", rows)
    for i, (name, _, _) in enumerate(rows[:3]):
        sf.write(root / "audio" / name, tone(2.0, 22_050, 300.0 + 200 * i, seed=i), 22_050)
    (root / "audio" / "2-4-A-10.wav").write_bytes(b"RIFF....this is not a wav file")
    # 2-5-A-0.wav is absent
    with caplog.at_level(logging.WARNING):
        clips = read_dataset(root, default_mapping())
        emb = embed_clips(cnn14_model_dir, clips, cache_dir=tmp_path / "cache")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("2-5-A-0.wav: audio file missing" in w for w in warnings)
    assert any("2-4-A-10.wav: not a readable audio file" in w and "skipped" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    assert emb.filename.tolist() == ["1-1-A-0.wav", "1-2-A-10.wav", "2-3-A-0.wav"]
    assert emb.label.tolist() == [1, 0, 1]
    assert emb.fold.tolist() == [1, 1, 2]
    assert emb.x.dtype == np.float32 and emb.x.shape == (3, 2048)
    assert np.all(np.isfinite(emb.x))
    # 2 s clips are one (short) device window; the streamed-vs-offline cosine is measured
    assert np.all((emb.cosine > 0.5) & (emb.cosine <= 1.0 + 1e-6))

    # cached: a second run computes nothing and returns the same rows
    caplog.clear()
    with caplog.at_level(logging.INFO):
        again = embed_clips(cnn14_model_dir, clips[:3], cache_dir=tmp_path / "cache")
    assert "3 cached, 0 to compute" in caplog.text
    np.testing.assert_array_equal(again.x, emb.x)

    # the cache belongs to one model: another id sees nothing
    path = cache_path(tmp_path / "cache", emb.model_id)
    assert path.is_file()
    assert set(load_cache(path, emb.model_id)) == set(emb.filename.tolist())
    assert load_cache(path, "0" * 64) == {}
    with np.load(path) as data:
        assert {"x", "filename", "fold", "label", "category", "model_id"} <= set(data.files)
        assert data["x"].dtype == np.float32
