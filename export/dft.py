"""Short-time Fourier transform in plain matrix products, for both backbones' front ends.

A DFT of length ``n_fft = radix**2`` is two radix-``radix`` stages (Cooley-Tukey: index
``n = radix*a + b``, bin ``k = k1 + radix*k2``) with a twiddle product between them: about 6x
fewer multiply-adds than one convolution with an ``n_fft``-tap filter per output bin (what
torchlibrosa and the first mn04 export did), and it exports to ONNX ``MatMul`` (onnxruntime's
``STFT`` op is slower on CPU and missing on CUDA). Framing is a reshape into blocks of
``gcd(hop, frame)`` samples and one strided slice per block of a frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def frames_of(x: Tensor, frame_length: int, hop: int) -> Tensor:
    """Every full frame of ``[B, L]``: ``[B, (L - frame_length) // hop + 1, frame_length]``."""
    block = math.gcd(hop, frame_length)
    step, per_frame = hop // block, frame_length // block
    batch, n_frames = x.shape[0], (x.shape[1] - frame_length) // hop + 1
    blocks = x[:, : block * (step * (n_frames - 1) + per_frame)].reshape(batch, -1, block)
    return torch.cat([blocks[:, j : j + step * (n_frames - 1) + 1 : step]
                      for j in range(per_frame)], dim=-1)


def dft_stages(n_fft: int, radix: int) -> dict[str, Tensor]:
    """Matrices of the two-stage DFT for the bins ``0 .. n_fft/2``.

    ``first`` ``[a, 2*k1]``: cos | -sin of the DFT over ``a``; ``twiddle_cos`` /
    ``twiddle_sin`` ``[b, k1]``: ``exp(-2 pi i b k1 / n_fft)``; ``second_re`` / ``second_im``
    ``[b, 2*k2]``: what the real and imaginary parts contribute to (re | im) of the DFT over
    ``b``. Computed in float64, stored float32.
    """
    if radix * radix != n_fft:
        raise ValueError(f"n_fft {n_fft} is not {radix}**2")
    r = torch.arange(radix, dtype=torch.float64)
    k2 = torch.arange(n_fft // 2 // radix + 1, dtype=torch.float64)  # bins up to n_fft/2
    first = 2.0 * math.pi * torch.outer(r, r) / radix
    twiddle = 2.0 * math.pi * torch.outer(r, r) / n_fft
    second = 2.0 * math.pi * torch.outer(r, k2) / radix
    # (zr + i zi)(cos - i sin) = zr cos + zi sin + i (zi cos - zr sin)
    out = {"first": torch.cat([torch.cos(first), -torch.sin(first)], dim=1),
           "twiddle_cos": torch.cos(twiddle), "twiddle_sin": -torch.sin(twiddle),
           "second_re": torch.cat([torch.cos(second), -torch.sin(second)], dim=1),
           "second_im": torch.cat([torch.sin(second), torch.cos(second)], dim=1)}
    return {name: value.to(torch.float32) for name, value in out.items()}


class RadixSTFT(nn.Module):
    """Frames ``[B, T, len(window)]`` → (real, imag) ``[B, T, n_fft//2 + 1]`` of the windowed
    frames centred in ``n_fft`` samples (the DFT phase refers to the start of the ``n_fft``
    frame, as ``torch.stft`` with a shorter centred window)."""

    def __init__(self, window: Tensor, n_fft: int = 1024, radix: int = 32) -> None:
        super().__init__()
        if window.numel() > n_fft:
            raise ValueError(f"window of {window.numel()} samples is longer than n_fft {n_fft}")
        self.register_buffer("window", window.to(torch.float32), persistent=False)
        for name, value in dft_stages(n_fft, radix).items():
            self.register_buffer(name, value, persistent=False)
        self.n_fft, self.radix = n_fft, radix
        self.n_bins = n_fft // 2 + 1
        self.n_k2 = self.second_re.shape[1] // 2
        self.margin = (n_fft - window.numel()) // 2

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        batch, n_frames, r = frames.shape[0], frames.shape[1], self.radix
        x = frames * self.window
        if self.margin:
            x = F.pad(x, (self.margin, self.n_fft - x.shape[-1] - self.margin))
        y = x.reshape(batch, n_frames, r, r).transpose(-1, -2) @ self.first  # [B, T, b, k1]
        y_re, y_im = y[..., :r], y[..., r:]
        z_re = (y_re * self.twiddle_cos - y_im * self.twiddle_sin).transpose(-1, -2)
        z_im = (y_re * self.twiddle_sin + y_im * self.twiddle_cos).transpose(-1, -2)
        spec = z_re @ self.second_re + z_im @ self.second_im  # [B, T, k1, (re|im) k2]

        def bins(part: Tensor) -> Tensor:  # [B, T, k1, k2] -> [B, T, bins], bin = k1 + r k2
            return part.transpose(-1, -2).reshape(batch, n_frames, -1)[..., : self.n_bins]

        return bins(spec[..., : self.n_k2]), bins(spec[..., self.n_k2 :])
