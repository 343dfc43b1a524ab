"""Tests for the EfficientAT mn04_as re-implementation in ``export/mn04.py``.

Tests that need the real weights, labels or ESC-10 audio from ``../shared`` skip when it is
absent; structural, STFT, split-parity and ONNX tests fall back to seeded random weights.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from export.mn04 import (
    FEATURE_DIM,
    MIN_SAMPLES,
    MN04,
    NUM_CLASSES,
    SAMPLE_RATE,
    LogMelFrontEnd,
    MN04Tagger,
    build_mn04,
    build_mn04_parts,
    load_mn04_state_dict,
)
from tests.helpers import shared_root  # the one locator of ../shared

SHARED = shared_root()
WEIGHTS = SHARED / "weights" / "mn04_as_mAP_432.pt"
LABELS = SHARED / "weights" / "class_labels_indices.csv"
ESC10 = SHARED / "esc10"

needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"real mn04_as weights not found at {WEIGHTS}"
)
needs_labels = pytest.mark.skipif(
    not LABELS.is_file(), reason=f"AudioSet label file not found at {LABELS}"
)


@pytest.fixture(scope="module")
def real_state_dict() -> dict[str, torch.Tensor]:
    if not WEIGHTS.is_file():
        pytest.skip(f"real mn04_as weights not found at {WEIGHTS}")
    return load_mn04_state_dict(WEIGHTS)


@pytest.fixture(scope="module")
def any_state_dict() -> dict[str, torch.Tensor]:
    """Real weights when available, otherwise a seeded random initialisation."""
    if WEIGHTS.is_file():
        return load_mn04_state_dict(WEIGHTS)
    torch.manual_seed(0)
    return MN04().state_dict()


@pytest.fixture(scope="module")
def labels() -> list[str]:
    if not LABELS.is_file():
        pytest.skip(f"AudioSet label file not found at {LABELS}")
    with LABELS.open(newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: int(r["index"]))
    assert len(rows) == NUM_CLASSES
    return [r["display_name"] for r in rows]


@pytest.fixture(scope="module")
def real_parts(real_state_dict: Mapping[str, torch.Tensor]):
    return build_mn04_parts(real_state_dict)


def _predict(parts, waveform: np.ndarray) -> torch.Tensor:
    frames, pooling, head = parts
    with torch.no_grad():
        return head(pooling(frames(torch.from_numpy(waveform).float()[None])))[0]


def _top(probs: torch.Tensor, labels: list[str], k: int) -> list[str]:
    return [labels[i] for i in probs.topk(k).indices.tolist()]


# ------------------------------------------------------------------ structure and loading


@needs_weights
def test_strict_load_matches_state_dict(real_state_dict: Mapping[str, torch.Tensor]) -> None:
    assert len(real_state_dict) == 312
    net = build_mn04(real_state_dict)  # load_state_dict(strict=True) inside
    own = net.state_dict()
    assert set(own) == set(real_state_dict)
    for key, value in real_state_dict.items():
        assert own[key].shape == value.shape, key
    assert real_state_dict["classifier.2.weight"].shape[1] == FEATURE_DIM
    assert real_state_dict["classifier.5.weight"].shape[0] == NUM_CLASSES
    n_params = sum(p.numel() for p in net.parameters())
    assert 0.95e6 < n_params < 1.0e6  # EfficientAT reports 0.98 M for mn04
    assert not net.training


def test_load_accepts_wrapped_checkpoint(tmp_path: Path) -> None:
    sd = MN04().state_dict()
    torch.save({"model": sd}, tmp_path / "wrapped.pt")
    torch.save(sd, tmp_path / "plain.pt")
    for name in ("wrapped.pt", "plain.pt"):
        loaded = load_mn04_state_dict(tmp_path / name)
        assert set(loaded) == set(sd)
        build_mn04(loaded)


# ------------------------------------------------------------------ front end


def _kaldi_banks_numpy(n_mels=128, n_fft=1024, sr=32000.0, f_lo=0.0, f_hi=15000.0) -> np.ndarray:
    """Independent float64 version of Kaldi's mel-bank formula (no VTLN)."""

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    edges = np.linspace(mel(f_lo), mel(f_hi), n_mels + 2)
    fft_mel = mel(np.arange(n_fft // 2) * sr / n_fft)
    banks = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (fft_mel - lo) / (c - lo)
        down = (hi - fft_mel) / (hi - c)
        banks[m, : n_fft // 2] = np.maximum(0.0, np.minimum(up, down))
    return banks


def test_mel_banks_match_kaldi_formula() -> None:
    fe = LogMelFrontEnd()
    assert fe.mel_banks.shape == (128, 513)
    np.testing.assert_allclose(fe.mel_banks.numpy(), _kaldi_banks_numpy(), atol=2e-5)
    assert torch.all(fe.mel_banks[:, -1] == 0)
    assert torch.all(fe.mel_banks[:, 481:] == 0)  # nothing above 15 kHz (bin 480 = 15 kHz)


def test_conv_stft_matches_torch_stft() -> None:
    gen = torch.Generator().manual_seed(1)
    fe = LogMelFrontEnd()
    for length in (MIN_SAMPLES - 1, 4000, 3 * SAMPLE_RATE + 123):
        x = torch.randn(3, length, generator=gen)
        real, imag = fe.stft(x)
        ref = torch.stft(
            x,
            n_fft=1024,
            hop_length=320,
            win_length=800,
            window=torch.hann_window(800, periodic=False),
            center=True,
            return_complex=True,
        )
        assert real.shape == ref.shape
        scale = ref.abs().max().item()
        # float32 FFT vs float32 direct DFT: relative error ~1e-6 of the spectrum's peak
        assert (real - ref.real).abs().max().item() <= 1e-5 * scale
        assert (imag - ref.imag).abs().max().item() <= 1e-5 * scale


def _reference_log_mel(waveform: torch.Tensor) -> torch.Tensor:
    """EfficientAT AugmentMelSTFT (eval) with torch.stft, as in the original code."""
    x = waveform[:, 1:] - 0.97 * waveform[:, :-1]
    spec = torch.stft(
        x,
        1024,
        hop_length=320,
        win_length=800,
        window=torch.hann_window(800, periodic=False),
        center=True,
        return_complex=True,
    )
    power = spec.real**2 + spec.imag**2
    banks = torch.from_numpy(_kaldi_banks_numpy()).float()
    return (torch.log(banks @ power + 1e-5) + 4.5) / 5.0


def test_front_end_matches_torch_stft_reference() -> None:
    gen = torch.Generator().manual_seed(2)
    fe = LogMelFrontEnd()
    for length in (MIN_SAMPLES, SAMPLE_RATE, 5 * SAMPLE_RATE):
        w = 0.3 * torch.randn(2, length, generator=gen)
        out = fe(w)
        ref = _reference_log_mel(w)
        assert out.shape == ref.shape == (2, 128, (length - 1) // 320 + 1)
        # log domain: float32 rounding in faint bins gives ~1e-4 (0.05 % in power)
        assert (out - ref).abs().max().item() < 5e-4


def test_min_samples_is_the_torch_stft_limit() -> None:
    """MIN_SAMPLES is the shortest input the original torch.stft front end accepts."""
    _reference_log_mel(torch.zeros(1, MIN_SAMPLES))
    with pytest.raises(RuntimeError):
        _reference_log_mel(torch.zeros(1, MIN_SAMPLES - 1))


# ------------------------------------------------------------------ split parity


@pytest.mark.slow  # > 20 s on 2 shared cores: torch on real clips
def test_parts_compose_to_full_model(any_state_dict: Mapping[str, torch.Tensor]) -> None:
    frames, pooling, head = build_mn04_parts(any_state_dict)
    full = MN04Tagger(build_mn04(any_state_dict)).eval()
    assert not (frames.training or pooling.training or head.training)
    gen = torch.Generator().manual_seed(3)
    t = torch.arange(10 * SAMPLE_RATE) / SAMPLE_RATE
    for seconds in (1, 5, 10):
        n = seconds * SAMPLE_RATE
        tone = 0.4 * torch.sin(2 * math.pi * 440.0 * t[:n])
        w = torch.stack([tone, 0.2 * torch.randn(n, generator=gen), tone + 0.05])
        with torch.no_grad():
            feats = frames(w)
            emb = pooling(feats)
            probs = head(emb)
            ref = full(w)
            fmap = full.net.features(full.frontend(w).unsqueeze(1))
        t_mel = (n - 1) // 320 + 1
        t_out = t_mel
        for _ in range(5):
            t_out = (t_out + 1) // 2
        assert feats.shape == (3, t_out, FEATURE_DIM)
        assert emb.shape == (3, FEATURE_DIM)
        assert probs.shape == ref.shape == (3, NUM_CLASSES)
        assert (probs - ref).abs().max().item() < 1e-5
        torch.testing.assert_close(emb, fmap.mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)


def test_frames_pads_short_input(any_state_dict: Mapping[str, torch.Tensor]) -> None:
    frames, _, _ = build_mn04_parts(any_state_dict)
    w = 0.1 * torch.randn(2, 200, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        short = frames(w)
        padded = frames(F.pad(w, (0, MIN_SAMPLES - 200)))
        one = frames(torch.zeros(1, 1))
    assert short.shape == (2, 1, FEATURE_DIM)
    assert one.shape == (1, 1, FEATURE_DIM)
    torch.testing.assert_close(short, padded)


# ------------------------------------------------------------------ behaviour, real weights


@needs_weights
@needs_labels
def test_sine_is_tagged_as_sine_or_beep(real_parts, labels: list[str]) -> None:
    t = np.arange(5 * SAMPLE_RATE) / SAMPLE_RATE
    top3 = _top(_predict(real_parts, 0.5 * np.sin(2 * np.pi * 1000.0 * t)), labels, 3)
    print("1 kHz sine top-3:", top3)
    assert {"Sine wave", "Beep, bleep"} & set(top3)


@needs_weights
@needs_labels
def test_white_noise_is_tagged_as_noise(real_parts, labels: list[str]) -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.3, 5 * SAMPLE_RATE)
    top3 = _top(_predict(real_parts, noise), labels, 3)
    print("white noise top-3:", top3)
    assert {"White noise", "Static", "Noise"} & set(top3)


@pytest.mark.slow  # > 20 s on 2 shared cores: torch on real clips
@needs_weights
@needs_labels
def test_esc10_dogs_are_tagged_as_dog(real_parts, labels: list[str]) -> None:
    sf = pytest.importorskip("soundfile")
    meta = ESC10 / "meta" / "esc50.csv"
    if not meta.is_file():
        pytest.skip(f"ESC-10 metadata not found at {meta}")
    with meta.open(newline="") as fh:
        names = [r["filename"] for r in csv.DictReader(fh) if r["category"] == "dog"]
    paths = [ESC10 / "audio" / Path(n).with_suffix(".flac").name for n in names]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        pytest.skip(f"no ESC-10 dog clips under {ESC10 / 'audio'}")
    hits = 0
    for path in paths:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        assert sr == SAMPLE_RATE
        top5 = _top(_predict(real_parts, audio.mean(axis=1)), labels, 5)
        hits += bool({"Dog", "Bark"} & set(top5))
    rate = hits / len(paths)
    print(f"ESC-10 dog clips with Dog/Bark in top-5: {hits}/{len(paths)} = {rate:.3f}")
    assert rate >= 0.8


# ------------------------------------------------------------------ ONNX export


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.slow
# torch's own exporter internals raise this deprecation (not our code); export/onnx_export.py
# silences all exporter warnings for users, here only this one is ignored
@pytest.mark.filterwarnings(r"ignore:`isinstance\(treespec, LeafSpec\)`:FutureWarning")
def test_onnx_export_matches_torch(
    any_state_dict: Mapping[str, torch.Tensor], tmp_path: Path
) -> None:
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from torch.export import Dim

    frames, pooling, head = build_mn04_parts(any_state_dict)
    batch = Dim("batch", min=1)
    specs = {
        "frames": (
            frames,
            torch.randn(2, SAMPLE_RATE),
            "waveform",
            "frames",
            {0: batch, 1: Dim("samples", min=1)},
        ),
        "pooling": (
            pooling,
            torch.randn(2, 7, FEATURE_DIM),
            "frames",
            "embedding",
            {0: batch, 1: Dim("time", min=1)},
        ),
        "head": (head, torch.randn(2, FEATURE_DIM), "embedding", "probabilities", {0: batch}),
    }
    sessions = {}
    for name, (module, example, in_name, out_name, dims) in specs.items():
        path = tmp_path / f"mn04_{name}.onnx"
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            opset_version=18,
            input_names=[in_name],
            output_names=[out_name],
            dynamic_shapes=(dims,),
        )
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert not ops & {"STFT", "DFT"}, ops
        sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run_onnx(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = sessions["frames"].run(None, {"waveform": w})[0]
        e = sessions["pooling"].run(None, {"frames": f})[0]
        return e, sessions["head"].run(None, {"embedding": e})[0]

    rng = np.random.default_rng(5)
    worst_abs, worst_cos = 0.0, 1.0
    for batch_size in (1, 4):
        for seconds in (1, 5, 10):
            n = seconds * SAMPLE_RATE
            t = np.arange(n) / SAMPLE_RATE
            tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 4000, (batch_size, 1)) * t)
            w = (tone + rng.normal(0.0, 0.1, (batch_size, n))).astype(np.float32)
            with torch.no_grad():
                emb_ref = pooling(frames(torch.from_numpy(w)))
                prob_ref = head(emb_ref)
            emb, prob = run_onnx(w)
            assert emb.shape == (batch_size, FEATURE_DIM)
            assert prob.shape == (batch_size, NUM_CLASSES)
            for got, ref in ((emb, emb_ref.numpy()), (prob, prob_ref.numpy())):
                err = float(np.abs(got - ref).max())
                cos = float(_cosine_rows(got, ref).min())
                worst_abs, worst_cos = max(worst_abs, err), min(worst_cos, cos)
                assert err <= 1e-4, (batch_size, seconds, err)
                assert cos >= 0.99999, (batch_size, seconds, cos)
    print(f"ONNX vs torch: max abs err {worst_abs:.2e}, min cosine {worst_cos:.8f}")

    for batch_size in (1, 4):  # 0.1 s and single-sample input must run (zero-padded)
        for n in (SAMPLE_RATE // 10, 1):
            w = rng.normal(0.0, 0.1, (batch_size, n)).astype(np.float32)
            emb, prob = run_onnx(w)
            assert prob.shape == (batch_size, NUM_CLASSES)
            assert np.isfinite(prob).all()
