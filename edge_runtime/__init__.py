"""edge-detect device runtime: ONNX-only danger-sound detection.

This package must never import torch, scikit-learn or librosa: the device installs only
onnxruntime, numpy, soundfile, soxr, click and sounddevice.
"""

import os

# onnxruntime ≥ 1.2x on Linux keeps a telemetry device id and an event cache under
# ~/.cache/Microsoft and tries to upload them; a private, offline home detector opts out
# (before onnxruntime starts; a user's own setting is kept).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"

__all__ = ["__version__"]
