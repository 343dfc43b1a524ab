"""Byte-reproducible ONNX files: the same checkpoint and code give the same bytes and model id.

What differed between two exports of the same checkpoint (measured on mn04, two processes): only
the debug metadata that torch's dynamo exporter attaches to every node
(``pkg.torch.onnx.stack_trace``, ``namespace``, ``class_hierarchy``, ``fx_node``, ...). It holds
Python object addresses (``<function sym_max at 0x7f71d5f77ec0>``, different in every process
because of ASLR) and absolute source paths (``/work/<checkout>/export/mn04.py``, different in
every checkout). Graph structure, node names, initializer names, order and values were
identical. The model-level ``metadata_props`` (the ExportedProgram's signature) is debug text too.

:func:`strip_debug` removes all of it (≈ 0.25 MB of text in mn04's 5.9 MB backbone); the device
never reads it. Timestamps and timings are kept out of the manifest for the same reason
(``export.onnx_export`` writes them to ``.workbench/export.json``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx


def _strip_graph(graph: onnx.GraphProto) -> None:
    del graph.metadata_props[:]
    for values in (graph.input, graph.output, graph.value_info, graph.initializer):
        for value in values:
            del value.metadata_props[:]
    for node in graph.node:
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.HasField("g"):
                _strip_graph(attr.g)
            for sub in attr.graphs:
                _strip_graph(sub)


def strip_debug(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove all ``metadata_props`` (exporter debug text), in place; returns ``model``."""
    del model.metadata_props[:]
    _strip_graph(model.graph)
    for function in model.functions:
        del function.metadata_props[:]
        for node in function.node:
            del node.metadata_props[:]
    return model


def save_reproducible(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Strip debug metadata and write ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    strip_debug(model)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save_model(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
