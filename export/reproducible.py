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

:func:`save_reproducible` also decides the storage: a graph with ≥ 1 MiB of weights keeps them
in ``<graph>.onnx.data`` (deterministic order and padding), which onnxruntime memory-maps at
load — the fix for the load-time memory peak (benchmarks/README.md, *Load-time memory*).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import onnx
from onnx import numpy_helper

from edge_runtime import atomic
from edge_runtime.manifest import FileEntry, file_entry
from edge_runtime.sessions import data_role

# Graphs with this many initializer bytes keep them in a separate ``<file>.data`` that
# onnxruntime memory-maps at load instead of parsing and copying them (see load-time memory in
# benchmarks/README.md: Cnn14 fp32 peak 1140 MB → 363 MB on load).
EXTERNAL_MIN_BYTES = 1 << 20
TENSOR_MIN_BYTES = 1024  # smaller tensors stay inside the graph file
# onnxruntime maps a tensor only if its offset is aligned to the page size / allocation
# granularity: 64 KiB covers 4 KiB (x86), 16 KiB (Raspberry Pi 5 kernels) and 64 KiB pages.
ALIGN = 1 << 16
SMALL_ALIGN = 64  # tensors under ALIGN bytes: read, not mapped; 64-byte aligned


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


def _externalize(model: onnx.ModelProto, data_path: Path, location: str) -> None:
    """Move initializers of ≥ TENSOR_MIN_BYTES into ``data_path`` (in initializer order); big
    ones start at ALIGN-aligned offsets so onnxruntime can memory-map them."""
    offset = 0
    with open(data_path, "wb") as handle:
        for tensor in model.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise ValueError(f"{tensor.name}: already external; load the model with its data")
            raw = tensor.raw_data if tensor.HasField("raw_data") else \
                numpy_helper.to_array(tensor).tobytes()
            if len(raw) < TENSOR_MIN_BYTES:
                continue
            pad = (-offset) % (ALIGN if len(raw) >= ALIGN else SMALL_ALIGN)
            handle.write(b"\0" * pad)
            offset += pad
            handle.write(raw)
            keep = (tensor.name, list(tensor.dims), tensor.data_type)
            tensor.Clear()
            tensor.name, tensor.data_type = keep[0], keep[2]
            tensor.dims.extend(keep[1])
            tensor.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)),
                               ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers held inside ``model`` (not external)."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def data_path(path: str | os.PathLike[str]) -> Path:
    """Where the external data of ``path`` goes: ``<name>.data`` beside it."""
    return Path(f"{path}.data")


def save_reproducible(model: onnx.ModelProto, path: str | os.PathLike[str],
                      external: bool | None = None) -> list[Path]:
    """Strip debug metadata and write ``path`` (and ``path.data``) atomically, the umask
    honoured; the paths written.

    ``external`` None: initializers go to ``<path>.data`` when they total ≥ EXTERNAL_MIN_BYTES.
    A stale ``.data`` from an earlier save is removed when the new file is self-contained.
    """
    path = Path(path)
    strip_debug(model)
    if external is None:
        external = initializer_bytes(model) >= EXTERNAL_MIN_BYTES
    data = data_path(path)
    if external:  # the weights first: the graph that points at them is renamed in last
        model = copy.deepcopy(model)
        with atomic.atomic_path(data) as tmp_data:
            _externalize(model, tmp_data, data.name)
    atomic.write_with(path, lambda tmp: onnx.save_model(model, str(tmp)))
    if not external:
        data.unlink(missing_ok=True)
    return [path, data] if external else [path]


def manifest_entries(model_dir: str | os.PathLike[str], role: str,
                     name: str) -> dict[str, FileEntry]:
    """Manifest ``files`` entries of graph ``name`` as ``role``, plus its external data file
    (role ``<role>_data``) when there is one."""
    model_dir = Path(model_dir)
    entries = {role: file_entry(model_dir, name)}
    if data_path(model_dir / name).is_file():
        entries[data_role(role)] = file_entry(model_dir, data_path(Path(name)).as_posix())
    return entries
