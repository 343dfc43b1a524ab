"""EfficientAT ``mn04_as``: MobileNetV3 (width 0.4) AudioSet tagger and its log-mel front end.

Re-implementation of the architecture described in "Efficient Large-Scale Audio Tagging via
Transformer-to-CNN Knowledge Distillation" (Schmid et al.; reference code: fschmid56/EfficientAT,
MIT licence). Submodule names follow the released state dict (``features.*``, ``classifier.*``)
so that ``mn04_as_mAP_432.pt`` loads with ``strict=True``.

Signal chain (eval mode, 32 kHz mono waveform in [-1, 1]):

1. pre-emphasis ``y[n] = x[n + 1] - 0.97 x[n]`` (length shrinks by one sample),
2. STFT, n_fft 1024, symmetric Hann window of 800 samples centred in the frame, hop 320,
   ``center=True`` with reflect padding; computed as framing plus a two-stage radix-32 DFT in
   plain matrix products (exports to ONNX ``MatMul``; no ``torch.stft``, whose ONNX ``STFT``
   op is slow on CPU and missing on CUDA),
3. power spectrum ``re^2 + im^2``,
4. 128 Kaldi-style triangular mel filters, 0 Hz to 15 kHz (+ one zero column for the Nyquist bin),
5. ``(log(mel + 1e-5) + 4.5) / 5``  ->  network input ``[B, 1, 128, T]``.

``gain.onnx`` (:meth:`MN04Frames.gain_graph`) gives a window's log-mel as if its audio had been
scaled by a gain: step 5 inverted, the mel power scaled, step 5 again; the daemon uses it to
bring quiet windows to a set loudness (the manifest's ``streaming.gain_*``).

For streaming the network is split into parts (see :func:`build_mn04_parts`): ``frames``
(front end + conv trunk + mean over frequency; exported as two graphs, ``frontend`` and
``backbone``, see :meth:`MN04Frames.split`), ``pooling`` (mean over time) and ``head`` (MLP
classifier + sigmoid).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from export.dft import RadixSTFT, frames_of
from export.gain_graph import log_mel_gain_graph

SAMPLE_RATE = 32_000
N_FFT = 1024
WIN_LENGTH = 800
HOP_LENGTH = 320
N_MELS = 128
F_MIN = 0.0
F_MAX = SAMPLE_RATE // 2 - 2000 // 2  # 15 kHz, EfficientAT's eval-mode upper edge
PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
LOG_SHIFT = 4.5  # network input = (log(mel + LOG_OFFSET) + LOG_SHIFT) / LOG_SCALE
LOG_SCALE = 5.0
NUM_CLASSES = 527
WIDTH_MULT = 0.4
BN_EPS = 1e-3

# Shortest waveform (in samples) the EfficientAT front end accepts: pre-emphasis removes one
# sample and ``torch.stft(center=True)`` reflect-pads n_fft // 2 = 512 samples, which needs at
# least 513 samples, so 514 samples (~16 ms). ``frames`` zero-pads shorter input up to this
# length; for inputs of at least this length it matches the torch.stft reference exactly.
MIN_SAMPLES = N_FFT // 2 + 2

#: Channels of the final feature map (``6 * 64``) = frame feature size D = embedding size E.
FEATURE_DIM = 384
#: Hidden width of the MLP head (``make_divisible(1280 * 0.4)``).
HEAD_HIDDEN = 512


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` without dropping more than 10 %."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block of MobileNetV3-large before width scaling."""

    in_ch: int
    kernel: int
    expand_ch: int
    out_ch: int
    use_se: bool
    hardswish: bool
    stride: int


# MobileNetV3-large bottlenecks (Howard et al. 2019, table 1), as used by EfficientAT.
MOBILENET_V3_LARGE: tuple[BlockSpec, ...] = (
    BlockSpec(16, 3, 16, 16, False, False, 1),
    BlockSpec(16, 3, 64, 24, False, False, 2),
    BlockSpec(24, 3, 72, 24, False, False, 1),
    BlockSpec(24, 5, 72, 40, True, False, 2),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 3, 240, 80, False, True, 2),
    BlockSpec(80, 3, 200, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 480, 112, True, True, 1),
    BlockSpec(112, 3, 672, 112, True, True, 1),
    BlockSpec(112, 5, 672, 160, True, True, 2),
    BlockSpec(160, 5, 960, 160, True, True, 1),
    BlockSpec(160, 5, 960, 160, True, True, 1),
)


# --------------------------------------------------------------------------------------------
# Front end
# --------------------------------------------------------------------------------------------


def kaldi_mel_banks(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: float = SAMPLE_RATE,
    f_min: float = F_MIN,
    f_max: float = F_MAX,
) -> Tensor:
    """Kaldi triangular mel filters (``torchaudio.compliance.kaldi.get_mel_banks``, no VTLN).

    Filters are triangles in the Kaldi mel scale ``1127 ln(1 + f / 700)`` with edges equally
    spaced between ``f_min`` and ``f_max``; they cover FFT bins ``0 .. n_fft/2 - 1``. The result
    is padded with one zero column (the Nyquist bin), giving ``[n_mels, n_fft // 2 + 1]``.
    Computed in float32 like torchaudio.
    """

    def to_mel(freq: Tensor) -> Tensor:
        return 1127.0 * torch.log(1.0 + freq / 700.0)

    mel_lo = 1127.0 * math.log(1.0 + f_min / 700.0)
    mel_hi = 1127.0 * math.log(1.0 + f_max / 700.0)
    step = (mel_hi - mel_lo) / (n_mels + 1)
    idx = torch.arange(n_mels, dtype=torch.float32).unsqueeze(1)
    left = mel_lo + idx * step
    centre = mel_lo + (idx + 1.0) * step
    right = mel_lo + (idx + 2.0) * step
    bin_hz = sample_rate / n_fft
    fft_mel = to_mel(bin_hz * torch.arange(n_fft // 2, dtype=torch.float32)).unsqueeze(0)
    rising = (fft_mel - left) / (centre - left)
    falling = (right - fft_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return F.pad(banks, (0, 1))


class LogMelFrontEnd(nn.Module):
    """EfficientAT ``AugmentMelSTFT`` in eval mode, written with ONNX-friendly ops.

    Input: waveform ``[B, N]`` (N >= MIN_SAMPLES). Output: normalised log-mel ``[B, 128, T]``
    with ``T = (N - 1) // 320 + 1``.

    The STFT is framing and a two-stage radix-32 DFT in matrix products (:mod:`export.dft`):
    ~6x fewer multiply-adds than one 800-tap convolution per output bin, which was ~60 % of
    mn04's whole graph (onnxruntime profile; 1 s of audio, 1 thread: 1.38 → 0.75 ms for the
    front end). Outputs equal ``torch.stft`` to float32 rounding (tests).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("preemphasis", torch.tensor([[[-PREEMPHASIS, 1.0]]]), persistent=False)
        self.dft = RadixSTFT(torch.hann_window(WIN_LENGTH, periodic=False, dtype=torch.float64),
                             N_FFT)
        self.register_buffer("mel_banks", kaldi_mel_banks(), persistent=False)
        # Reflect-padding by n_fft // 2 and then skipping the window's zero margin is the same
        # as reflect-padding by win_length // 2 and framing win_length samples.
        self.pad = WIN_LENGTH // 2

    def stft(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-emphasised signal ``[B, L]`` -> (real, imag) ``[B, n_fft//2 + 1, L//hop + 1]``."""
        x = F.pad(x.unsqueeze(1), (self.pad, self.pad), mode="reflect").squeeze(1)
        real, imag = self.dft(frames_of(x, WIN_LENGTH, HOP_LENGTH))
        return real.transpose(1, 2), imag.transpose(1, 2)

    def forward(self, waveform: Tensor) -> Tensor:
        x = F.conv1d(waveform.unsqueeze(1), self.preemphasis).squeeze(1)
        real, imag = self.stft(x)
        power = real * real + imag * imag
        mel = torch.matmul(self.mel_banks, power)
        return (torch.log(mel + LOG_OFFSET) + LOG_SHIFT) / LOG_SCALE


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d(eps=1e-3) -> optional activation (keys ``0``, ``1``)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=0.01),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Channel squeeze-excitation: mean over (freq, time) -> fc1 -> ReLU -> fc2 -> sigmoid."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeeze)
        self.fc2 = nn.Linear(squeeze, channels)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class ConcurrentSE(nn.Module):
    """EfficientAT's concurrent SE wrapper; mn04_as uses a single channel SE ('c', r = 4)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeeze = make_divisible(channels // reduction, 8)
        self.conc_se_layers = nn.ModuleList([SqueezeExcitation(channels, squeeze)])

    def forward(self, x: Tensor) -> Tensor:
        # With several SE layers EfficientAT takes the element-wise max; here there is one.
        out = self.conc_se_layers[0](x)
        for layer in self.conc_se_layers[1:]:
            out = torch.maximum(out, layer(x))
        return out


class InvertedResidual(nn.Module):
    """MobileNetV3 bottleneck: [1x1 expand] -> depthwise kxk -> [SE] -> 1x1 project (+ skip)."""

    def __init__(self, spec: BlockSpec, width: float = WIDTH_MULT) -> None:
        super().__init__()
        in_ch = make_divisible(spec.in_ch * width)
        mid_ch = make_divisible(spec.expand_ch * width)
        out_ch = make_divisible(spec.out_ch * width)
        act: type[nn.Module] = nn.Hardswish if spec.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if mid_ch != in_ch:
            layers.append(ConvBNAct(in_ch, mid_ch, 1, act=act))
        layers.append(ConvBNAct(mid_ch, mid_ch, spec.kernel, spec.stride, groups=mid_ch, act=act))
        if spec.use_se:
            layers.append(ConcurrentSE(mid_ch))
        layers.append(ConvBNAct(mid_ch, out_ch, 1))
        self.block = nn.Sequential(*layers)
        self.use_residual = spec.stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class MN04(nn.Module):
    """mn04_as network: log-mel ``[B, 1, 128, T]`` -> AudioSet logits ``[B, 527]``.

    ``features``: stem conv (3x3, stride 2, hardswish, 8 ch) + 15 inverted residuals + 1x1 conv
    to 384 channels with hardswish; overall stride 32 in frequency and time (128 bands -> 4).
    ``classifier``: global average pool -> flatten -> Linear(384, 512) -> hardswish -> dropout
    -> Linear(512, 527).
    """

    def __init__(self, width: float = WIDTH_MULT, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        stem_ch = make_divisible(MOBILENET_V3_LARGE[0].in_ch * width)
        last_in = make_divisible(MOBILENET_V3_LARGE[-1].out_ch * width)
        last_out = 6 * last_in
        hidden = make_divisible(1280 * width)
        layers: list[nn.Module] = [ConvBNAct(1, stem_ch, 3, stride=2, act=nn.Hardswish)]
        layers += [InvertedResidual(spec, width) for spec in MOBILENET_V3_LARGE]
        layers.append(ConvBNAct(last_in, last_out, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(last_out, hidden),
            nn.Hardswish(),
            nn.Dropout(p=0.2),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, mel: Tensor) -> Tensor:
        return self.classifier(self.features(mel))


class MN04Tagger(nn.Module):
    """Full reference model: waveform ``[B, N]`` at 32 kHz -> 527 probabilities."""

    def __init__(self, net: MN04, frontend: LogMelFrontEnd | None = None) -> None:
        super().__init__()
        self.frontend = frontend if frontend is not None else LogMelFrontEnd()
        self.net = net

    def forward(self, waveform: Tensor) -> Tensor:
        return torch.sigmoid(self.net(self.frontend(waveform).unsqueeze(1)))


# --------------------------------------------------------------------------------------------
# Streaming parts
# --------------------------------------------------------------------------------------------


class MN04FrontEnd(nn.Module):
    """Waveform ``[B, N]`` -> normalised log-mel ``[B, 128, T]``; input shorter than
    MIN_SAMPLES is zero-padded at the end. Exported alone as ``frontend.onnx``."""

    def __init__(self, frontend: LogMelFrontEnd) -> None:
        super().__init__()
        self.frontend = frontend

    def forward(self, waveform: Tensor) -> Tensor:
        missing = torch.sym_max(0, MIN_SAMPLES - waveform.shape[1])
        return self.frontend(F.pad(waveform, (0, missing)))


class MN04Network(nn.Module):
    """Log-mel ``[B, 128, T]`` -> frame features ``[B, T', 384]`` (mean over the 4 freq rows);
    ``T'`` is ``T`` halved (rounding up) five times. Exported as ``backbone.onnx``."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features

    def forward(self, mel: Tensor) -> Tensor:
        fmap = self.features(mel.unsqueeze(1))  # [B, 384, 4, T']
        return fmap.mean(dim=2).transpose(1, 2)


class MN04Frames(nn.Module):
    """Waveform ``[B, N]`` -> frame features ``[B, T', 384]``: front end then network.

    The device runs the two as separate graphs (:meth:`split`): the log-mel of each 1 s chunk
    is computed once and a whole window's network pass reads the chunks' log-mels joined along
    time. The STFT is ~70 % of mn04's work, so this makes a 5 s window pass per hop ~2.7×
    cheaper than running the full graph on the window's audio.
    """

    def __init__(self, frontend: LogMelFrontEnd, features: nn.Sequential) -> None:
        super().__init__()
        self.front = MN04FrontEnd(frontend)
        self.network = MN04Network(features)

    def split(self) -> tuple[nn.Module, nn.Module]:
        """``(front end, network)``: waveform -> log-mel, log-mel -> frames."""
        return self.front, self.network

    @staticmethod
    def gain_graph() -> onnx.ModelProto:
        """``gain.onnx``: the front end's log-mel of audio scaled by ``gain_db``."""
        return log_mel_gain_graph(LOG_OFFSET, LOG_SHIFT, LOG_SCALE, N_MELS)

    def forward(self, waveform: Tensor) -> Tensor:
        return self.network(self.front(waveform))


class MeanPooling(nn.Module):
    """Frame features ``[B, T, D]`` -> clip embedding ``[B, D]`` (mean over time)."""

    def forward(self, frames: Tensor) -> Tensor:
        return frames.mean(dim=1)


class MN04Head(nn.Module):
    """Embedding ``[B, 384]`` -> 527 probabilities: Linear -> hardswish -> Linear -> sigmoid."""

    def __init__(self, hidden: nn.Linear, output: nn.Linear) -> None:
        super().__init__()
        self.hidden = hidden
        self.output = output

    def forward(self, embedding: Tensor) -> Tensor:
        return torch.sigmoid(self.output(F.hardswish(self.hidden(embedding))))


def load_mn04_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Load an mn04 checkpoint: a plain state dict or ``{"model": state_dict}``."""
    obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return dict(obj)


def build_mn04(state_dict: Mapping[str, Tensor]) -> MN04:
    """Instantiate :class:`MN04`, load ``state_dict`` strictly and switch to eval mode."""
    net = MN04()
    net.load_state_dict(state_dict, strict=True)
    return net.eval()


def build_mn04_parts(state_dict: Mapping[str, Tensor]) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Return eval-mode ``(frames, pooling, head)`` sharing the weights of one loaded model.

    ``head(pooling(frames(w)))`` equals ``MN04Tagger(build_mn04(sd))(w)`` (up to float rounding),
    because mean over frequency then over time is the classifier's global average pooling.
    """
    net = build_mn04(state_dict)
    frames = MN04Frames(LogMelFrontEnd(), net.features).eval()
    pooling = MeanPooling().eval()
    head = MN04Head(net.classifier[2], net.classifier[5]).eval()
    return frames, pooling, head
