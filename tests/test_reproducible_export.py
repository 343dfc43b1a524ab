"""Same checkpoint and code → byte-identical ONNX files and the same model id; a rebuild reuses
the embedding cache and removes stale ones."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_runtime.manifest import Manifest, load_manifest, sha256_file
from export.reproducible import save_reproducible, strip_debug

EXPORT_ROLES = ("frontend", "frontend_data", "backbone", "backbone_data", "pooling",
                "pooling_data", "head", "head_data", "gain", "labels")


def export_files(manifest: Manifest) -> dict:
    return {r: e for r, e in manifest.files.items() if r in EXPORT_ROLES}


@pytest.mark.slow
def test_export_in_another_process_and_folder_gives_the_same_bytes(
        mn04_weights: Path, mn04_model_dir: Path, tmp_path: Path) -> None:
    """The session build exported mn04 in this process; export it again in a fresh process
    (other object addresses) from another working directory: every file and the id agree."""
    from tests.helpers import REPO

    out = tmp_path / "again"
    res = subprocess.run([sys.executable, "-m", "training.cli", "export", "--weights",
                          str(mn04_weights), "--out", str(out)], cwd=tmp_path,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    first, second = load_manifest(mn04_model_dir), load_manifest(out)
    assert export_files(first) == export_files(second)
    for entry in second.files.values():
        assert sha256_file(out / entry.path) == entry.sha256
    base = first.replace(files=export_files(first), classifier=None, workbench={})
    assert base.model_id() == second.model_id()  # the whole export manifest, files included
    assert base.to_dict() == second.to_dict()
    raw = (out / "manifest.json").read_text()
    assert '"created"' not in raw and '"export_seconds"' not in raw
    assert "backbone_data" in second.files  # mn04's weights are memory-mappable


@pytest.mark.slow
def test_rebuild_reuses_the_embedding_cache_and_keeps_the_model_id(
        mn04_weights: Path, mn04_model_dir: Path, esc10_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from training.build import build
    from training.mapping import binary_mapping

    model = tmp_path / "model"
    shutil.copytree(mn04_model_dir, model)
    stale = model / ".workbench" / "embeddings-0123456789abcdef.npz"
    np.savez(stale, model_id=np.array("someone else"))
    with caplog.at_level(logging.INFO):
        build(esc10_dir, model, str(mn04_weights), classifier="logreg",
              mapping=binary_mapping(), per_fold_limit=2, measure_offline=False)
    assert "embeddings: 60 cached, 0 to compute" in caplog.text
    assert not stale.exists()
    assert len(list((model / ".workbench").glob("embeddings-*.npz"))) == 1
    # the same device files, byte for byte, and the same model id (no timestamps in a manifest)
    assert load_manifest(model).files == load_manifest(mn04_model_dir).files
    assert load_manifest(model).model_id() == load_manifest(mn04_model_dir).model_id()


def test_strip_debug_removes_metadata_and_nothing_else(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(600, dtype=np.float32).reshape(20, 30), "w")
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    node.metadata_props.add(key="pkg.torch.onnx.stack_trace", value="/home/me/x.py 0x7f00")
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 20])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 30])],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key="signature", value="anything")
    clean = strip_debug(onnx.ModelProto.FromString(model.SerializeToString()))
    assert not clean.metadata_props and not clean.graph.node[0].metadata_props
    model.graph.node[0].ClearField("metadata_props")
    model.ClearField("metadata_props")
    assert clean == model

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert save_reproducible(model, a, external=True) == [a, Path(f"{a}.data")]
    from edge_runtime.atomic import current_umask

    for written in (a, Path(f"{a}.data")):  # the umask honoured, not mkstemp's 0600
        assert written.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    save_reproducible(model, b, external=True)
    assert Path(f"{a}.data").read_bytes() == Path(f"{b}.data").read_bytes()
    loaded = onnx.load(str(a))  # external data read back from a.onnx.data
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]),
                                  np.arange(600, dtype=np.float32).reshape(20, 30))
    save_reproducible(model, a, external=False)  # self-contained again: no stale .data
    assert not Path(f"{a}.data").exists()


def test_big_tensors_are_page_aligned_for_memory_mapping(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from export.reproducible import ALIGN

    small = numpy_helper.from_array(np.ones(300, dtype=np.float32), "small")  # 1200 bytes
    big = numpy_helper.from_array(np.ones((256, 256), dtype=np.float32), "big")  # 256 KiB
    nodes = [helper.make_node("Add", ["x", "small"], ["s"]),
             helper.make_node("MatMul", ["m", "big"], ["y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [300]),
                               helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("s", TensorProto.FLOAT, [300]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
                              [small, big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "m.onnx"
    save_reproducible(model, path, external=True)
    stored = onnx.load(str(path), load_external_data=False)
    offsets = {t.name: int({e.key: e.value for e in t.external_data}["offset"])
               for t in stored.graph.initializer}
    assert offsets["small"] == 0 and offsets["big"] % ALIGN == 0 and offsets["big"] > 0
