"""Workbench: datasets, device-identical embeddings, classifiers, evaluation, ONNX export."""
