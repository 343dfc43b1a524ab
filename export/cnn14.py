"""PANNs Cnn14 split into the three graphs the device runs: frames, pooling, AudioSet head.

The modules wrap ``panns_inference.models.Cnn14`` (the reference implementation) and reuse its
layers, so ``head(pooling(frames(x)))`` and ``pooling(frames(x))`` reproduce its
``clipwise_output`` and ``embedding`` (eval mode). Only the split is ours.

Note on pooling: the reference ``Cnn14.forward`` pools as mean over frequency → max + mean over
time → fc1 → ReLU. (The 3-tap max+avg smoothing over time belongs to the ``Cnn14_DecisionLevel*``
variants, not to Cnn14; we follow Cnn14 so parity with ``Cnn14(...)['embedding']`` holds.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.dft import RadixSTFT, frames_of
from export.panns import panns_models

SAMPLE_RATE = 32_000
HOP = 320
TIME_DOWNSAMPLE = 32  # five 2x2 average pools in conv blocks 1-5
# Shortest input that yields one output frame: 1 + samples // 320 STFT frames (center=True)
# must reach 32 → 31 * 320 samples (0.31 s). Shorter input is zero-padded inside the graph.
MIN_SAMPLES = (TIME_DOWNSAMPLE - 1) * HOP
EMBEDDING_DIM = 2048
FRAME_DIM = 2048


def reference_model(state_dict: dict | None = None) -> nn.Module:
    """``panns_inference.models.Cnn14`` with PANNs' settings, eval mode, weights loaded."""
    models = panns_models()
    model = models.Cnn14(sample_rate=SAMPLE_RATE, window_size=1024, hop_size=HOP, mel_bins=64,
                         fmin=50, fmax=14000, classes_num=527)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def pad_to_min(waveform: torch.Tensor, min_samples: int) -> torch.Tensor:
    """Zero-pad ``[B, S]`` on the right to at least ``min_samples`` (exports as ONNX Pad)."""
    return F.pad(waveform, (0, torch.sym_max(0, min_samples - waveform.shape[1])))


class Cnn14Frames(nn.Module):
    """Waveform ``[B, S]`` at 32 kHz → frame features ``[B, T, 2048]`` (log-mel in-graph).

    T = (1 + S // 320) // 32 after padding S to at least MIN_SAMPLES. The frequency axis is
    averaged here (per-frame, so it commutes with concatenating chunks along time).
    """

    def __init__(self, cnn14: nn.Module) -> None:
        super().__init__()
        self.m = cnn14
        stft = cnn14.spectrogram_extractor.stft
        if not (stft.center and stft.pad_mode == "reflect" and stft.hop_length == HOP):
            raise ValueError("Cnn14's STFT is not the centred, reflect-padded one this expects")
        # torchlibrosa's STFT is a convolution with n_fft DFT x window filters per bin (~20 %
        # of the int8 backbone's time); the same transform as two radix-32 stages. The window
        # is the convolution's bin-0 filter (cos 0 = 1: the window itself).
        self.dft = RadixSTFT(stft.conv_real.weight[0, 0].detach().clone(), stft.n_fft)
        self.n_fft = stft.n_fft

    def logmel(self, waveform: torch.Tensor) -> torch.Tensor:
        """PANNs log-mel ``[B, 1, frames, 64]`` (dB): torchlibrosa's power spectrogram (reflect
        padding, ``center=True``) computed by :class:`export.dft.RadixSTFT`, then Cnn14's own
        mel filter bank and dB conversion."""
        pad = self.n_fft // 2
        x = F.pad(waveform.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        real, imag = self.dft(frames_of(x, self.n_fft, HOP))
        return self.m.logmel_extractor((real * real + imag * imag).unsqueeze(1))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        m = self.m
        x = self.logmel(pad_to_min(waveform, MIN_SAMPLES))
        x = m.bn0(x.transpose(1, 3)).transpose(1, 3)
        blocks = (m.conv_block1, m.conv_block2, m.conv_block3, m.conv_block4, m.conv_block5)
        for block in blocks:
            x = block(x, pool_size=(2, 2), pool_type="avg")
        x = m.conv_block6(x, pool_size=(1, 1), pool_type="avg")
        return torch.mean(x, dim=3).transpose(1, 2)


class Cnn14Pooling(nn.Module):
    """Frame features ``[B, T, 2048]`` → clip embedding ``[B, 2048]``: max+mean, fc1, ReLU."""

    def __init__(self, cnn14: nn.Module) -> None:
        super().__init__()
        self.fc1 = cnn14.fc1

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        pooled = torch.amax(frames, dim=1) + torch.mean(frames, dim=1)
        return F.relu(self.fc1(pooled))


class Cnn14Head(nn.Module):
    """Embedding ``[B, 2048]`` → 527 AudioSet probabilities (sigmoid of fc_audioset)."""

    def __init__(self, cnn14: nn.Module) -> None:
        super().__init__()
        self.fc = cnn14.fc_audioset

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(embedding))


def build_parts(state_dict: dict) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(frames, pooling, head) modules sharing one Cnn14 loaded strictly from ``state_dict``."""
    model = reference_model(state_dict)
    return Cnn14Frames(model).eval(), Cnn14Pooling(model).eval(), Cnn14Head(model).eval()


def calibration_batch(seed: int, seconds: float = 5.0) -> torch.Tensor:
    """Seeded, varied signals (noise of several colours and levels, tones, a square wave, a
    chirp, clicks, near-silence) so calibrated statistics cover what tests and users feed in."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    white = torch.randn(4, n, generator=gen)
    brown = torch.cumsum(torch.randn(2, n, generator=gen), dim=1)
    brown = brown - brown.mean(dim=1, keepdim=True)
    brown = brown / brown.abs().amax(dim=1, keepdim=True)
    clicks = (torch.rand(1, n, generator=gen) > 0.999).float()
    signals = [
        white * torch.tensor([[0.5], [0.1], [0.01], [1e-4]]),
        brown * torch.tensor([[0.5], [0.05]]),
        0.5 * torch.sin(2 * torch.pi * 440 * t)[None],
        0.2 * torch.sin(2 * torch.pi * 3000 * t)[None],
        0.3 * torch.sign(torch.sin(2 * torch.pi * 150 * t))[None],
        0.3 * torch.sin(2 * torch.pi * (100 + 1500 * t) * t)[None],
        clicks * 0.8,
        torch.zeros(1, n),
    ]
    return torch.cat(signals).float()


def random_state_dict(seed: int = 0) -> dict:
    """Seeded random-init Cnn14 weights with data-calibrated statistics (an untrained network).

    Xavier init alone leaves BatchNorm at (mean 0, var 1), so the dB log-mel (≈ -100..+20)
    would enter the convs unnormalised and embeddings reach the thousands. We (1) set every
    BatchNorm's running statistics from one pass over ``calibration_batch`` and (2) scale fc1 so
    the pooled features enter it at unit variance: embeddings then have a trained network's
    order of magnitude. For parity, plumbing and benchmarks only — never a quality claim.
    """
    torch.manual_seed(seed)
    model = reference_model(None)
    batch = calibration_batch(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration pass
            module.train()  # the rest stays in eval: no dropout, no SpecAugment
    frames_m = Cnn14Frames(model)
    with torch.no_grad():
        frames = frames_m(batch)
        model.eval()
        frames = frames_m(batch)
        pooled = torch.amax(frames, dim=1) + torch.mean(frames, dim=1)
        model.fc1.weight /= pooled.std().clamp_min(1e-6)
        model.fc1.bias.zero_()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
