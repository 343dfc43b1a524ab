"""Benchmarks: torch eager vs ONNX fp32 (CPU/CUDA/TensorRT) vs ONNX int8 (``benchmarks.run``)."""
