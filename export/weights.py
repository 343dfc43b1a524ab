"""Known checkpoints: where they come from, their checksums, the local cache, and loading."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from export.download import download


@dataclass(frozen=True)
class Checkpoint:
    """An official pretrained checkpoint and how to verify it."""

    backbone: str
    filename: str
    url: str
    sha256: str
    size: int


CHECKPOINTS: dict[str, Checkpoint] = {
    "cnn14": Checkpoint(
        backbone="cnn14",
        filename="Cnn14_mAP=0.431.pth",
        # PANNs, Kong et al. 2020, Zenodo record 3987831.
        url="https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth?download=1",
        sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
        size=327_428_481,
    ),
    "mn04": Checkpoint(
        backbone="mn04",
        filename="mn04_as_mAP_432.pt",
        # EfficientAT (F. Schmid, MIT licence), release v0.0.1.
        url="https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/mn04_as_mAP_432.pt",
        sha256="899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c",
        size=4_066_513,
    ),
}


def cache_root() -> Path:
    """Downloads live here, never in the repository: ``$EDGE_DETECT_CACHE``, default
    ``~/.cache/edge-detect``."""
    return Path(os.environ.get("EDGE_DETECT_CACHE") or Path.home() / ".cache" / "edge-detect")


def cache_dir() -> Path:
    """Weights cache: ``$EDGE_DETECT_CACHE/weights``, default ``~/.cache/edge-detect/weights``."""
    return cache_root() / "weights"


def fetch(backbone: str, url: str | None = None, dest_dir: Path | None = None) -> Path:
    """Download (resuming) and verify the official checkpoint of ``backbone``; return its path."""
    ckpt = CHECKPOINTS[backbone]
    dest = Path(dest_dir or cache_dir()) / ckpt.filename
    return download(url or ckpt.url, dest, ckpt.sha256, ckpt.size,
                    hint=f"pass its path with --weights (sha256 {ckpt.sha256})")


def resolve(weights: str | os.PathLike[str]) -> Path:
    """A checkpoint path from a local path or a known name (``cnn14``, ``mn04``) in the cache."""
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    name = str(weights).lower()
    if name in CHECKPOINTS:
        cached = cache_dir() / CHECKPOINTS[name].filename
        if cached.is_file():
            return cached
        raise FileNotFoundError(
            f"{cached}: not downloaded yet; run 'edge-train fetch-weights --backbone {name}' "
            f"or pass a local file with --weights"
        )
    raise FileNotFoundError(f"{path}: no such checkpoint file")


def load_state_dict(path: str | os.PathLike[str]) -> dict:
    """Load a checkpoint safely (``weights_only=True``); accepts ``{"model": sd}`` or a bare sd."""
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise ValueError(f"{path}: not a loadable torch checkpoint ({exc.__class__.__name__})") \
            from exc
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path}: checkpoint holds no state dict")
    return obj
