"""The backbones the project can export, behind one (frames, pooling, head) contract."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """What the manifest needs to know about a backbone."""

    name: str
    sample_rate: int
    min_samples: int
    frame_dim: int
    embedding_dim: int
    description: str


def detect(state_dict: dict) -> str:
    """Guess the backbone from a state dict's parameter names."""
    if "conv_block1.conv1.weight" in state_dict and "fc_audioset.weight" in state_dict:
        return "cnn14"
    if any(key.startswith("features.") for key in state_dict):
        return "mn04"
    raise ValueError("unrecognised checkpoint: neither PANNs Cnn14 nor EfficientAT mn04 names")


Parts = tuple[nn.Module, nn.Module, nn.Module]


def build(name: str, state_dict: dict) -> tuple[BackboneSpec, Parts]:
    """Spec and (frames, pooling, head) eval-mode modules for backbone ``name``."""
    if name == "cnn14":
        from export import cnn14

        spec = BackboneSpec("cnn14", cnn14.SAMPLE_RATE, cnn14.MIN_SAMPLES, cnn14.FRAME_DIM,
                            cnn14.EMBEDDING_DIM, "PANNs Cnn14 (Kong et al. 2020), 64-band log-mel")
        return spec, cnn14.build_parts(state_dict)
    if name == "mn04":
        from export import mn04

        spec = BackboneSpec("mn04", mn04.SAMPLE_RATE, mn04.MIN_SAMPLES, mn04.FEATURE_DIM,
                            mn04.FEATURE_DIM, "EfficientAT mn04_as (Schmid et al. 2023, MIT), "
                            "MobileNetV3 width 0.4, 128-band log-mel")
        return spec, mn04.build_mn04_parts(state_dict)
    raise ValueError(f"unknown backbone {name!r}")
