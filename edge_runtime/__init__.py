"""edge-detect device runtime: ONNX-only danger-sound detection.

This package must never import torch, scikit-learn or librosa: the device installs only
onnxruntime, numpy, soundfile, soxr, click and sounddevice.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
