"""Workbench side: checkpoints → ONNX model dirs. May import edge_runtime, never the reverse."""
