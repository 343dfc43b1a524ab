"""Static int8 quantization: front-end detection, file split, the cosine gate, the CLI error.

The end-to-end tests use the real mn04 weights and ESC-10 clips from ../shared (skipped when
absent): calibration on real audio is the point.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.manifest import load_manifest
from training import quantize as q


def toy_backbone() -> onnx.ModelProto:
    """waveform → Pad → Conv (STFT) → Mul (power) → MatMul (mel) → Log → Div → Conv → Relu →
    Conv → frames: the shape of the exported front ends."""
    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape, np.ones(shape).ravel())

    nodes = [
        helper.make_node("Pad", ["waveform", "pads"], ["padded"], name="pad"),
        helper.make_node("Conv", ["padded", "stft_w"], ["spec"], name="stft"),
        helper.make_node("Mul", ["spec", "spec"], ["power"], name="power"),
        helper.make_node("MatMul", ["power", "mel_w"], ["mel"], name="mel"),
        helper.make_node("Log", ["mel"], ["logmel"], name="log"),
        helper.make_node("Div", ["logmel", "scale"], ["norm"], name="scale_db"),
        helper.make_node("Conv", ["norm", "c1_w"], ["c1"], name="first_conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "c2_w"], ["frames"], name="second_conv"),
    ]
    graph = helper.make_graph(
        nodes, "toy", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, 1, 8])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor("pads", TensorProto.INT64, [6], [0] * 6),
                     init("stft_w", 2, 1, 4), init("mel_w", 5, 3), init("scale", 1),
                     init("c1_w", 2, 2, 1), init("c2_w", 2, 2, 1)])
    return helper.make_model(graph)


def test_front_end_is_everything_up_to_the_first_conv_after_log() -> None:
    assert q.front_end_nodes(toy_backbone()) == [
        "pad", "stft", "power", "mel", "log", "scale_db", "first_conv"]


def test_a_graph_without_log_is_refused() -> None:
    model = toy_backbone()
    for node in model.graph.node:
        if node.op_type == "Log":
            node.op_type = "Exp"
    with pytest.raises(ValueError, match="no Log node"):
        q.front_end_nodes(model)


def pooled_graph() -> onnx.ModelProto:
    """x → Conv → Relu → AveragePool 2×2/2 → AveragePool 1×1 → AveragePool 3×3/1 (overlapping)
    → y: the shape of Cnn14's conv blocks, plus a pool the rewrite must leave alone."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("AveragePool", ["r"], ["p2"], name="pool2", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("AveragePool", ["p2"], ["p1"], name="pool1", kernel_shape=[1, 1],
                         strides=[1, 1]),
        helper.make_node("AveragePool", ["p1"], ["y"], name="pool3", kernel_shape=[3, 3],
                         strides=[1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, None, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, None, None])],
        initializer=[numpy_helper.from_array(rng.standard_normal((6, 2, 3, 3)).astype(np.float32),
                                             "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run_graph(model: onnx.ModelProto, **inputs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


def test_average_pools_become_depthwise_convs_with_the_same_output() -> None:
    model = pooled_graph()
    x = np.random.default_rng(1).standard_normal((1, 2, 12, 8)).astype(np.float32)
    before = run_graph(model, x=x)
    assert q.pools_as_depthwise(model) == {"depthwise": 1, "identity_removed": 1}
    onnx.checker.check_model(model)
    ops = [(n.name, n.op_type) for n in model.graph.node]
    assert ops == [("conv", "Conv"), ("relu", "Relu"), ("pool2", "Conv"),
                   ("pool3", "AveragePool")]  # overlapping pool left alone
    pool2 = model.graph.node[2]
    assert helper.get_attribute_value(pool2.attribute[0]) == 6  # group = channels
    np.testing.assert_allclose(run_graph(model, x=x), before, rtol=1e-6, atol=1e-6)


def test_gemm_becomes_matmul_plus_bias_with_the_same_output() -> None:
    rng = np.random.default_rng(2)
    w, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)], "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((3, 4)).astype(np.float32)
    before = run_graph(model, x=x)
    assert q.gemm_as_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add"]
    np.testing.assert_allclose(run_graph(model, x=x), before, rtol=1e-5, atol=1e-6)


def test_a_pooling_graph_without_big_products_is_not_quantized(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["frames"], ["emb"], axes=[1], keepdims=0)], "pool",
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, None, 4])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)])
    src = tmp_path / "pooling.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    assert q.quantize_pooling(src, tmp_path / "out.onnx") == 0
    assert not (tmp_path / "out.onnx").exists()


def test_calibration_and_check_files_are_disjoint() -> None:
    files = [Path(f"{i}.wav") for i in range(40)]
    calib, check = q.split_files(files, n_calib=30, n_check=8)
    assert len(check) == 8 and len(calib) == 30
    assert not set(calib) & set(check)
    assert q.split_files(files, 30, 8) == (calib, check)  # seeded


def test_out_equal_to_model_is_a_one_line_cli_error(tmp_path: Path) -> None:
    from training.cli import main

    result = CliRunner().invoke(main, ["quantize", "--model", str(tmp_path), "--data",
                                       str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "own folder" in result.output


@pytest.fixture(scope="module")
def mn04_dir(mn04_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.pipeline import export_from_checkpoint

    out = tmp_path_factory.mktemp("mn04")
    export_from_checkpoint(str(mn04_weights), out)
    return out


def test_quantized_mn04_passes_the_gate_and_loads(mn04_dir: Path, esc10_dir: Path,
                                                 tmp_path: Path) -> None:
    from edge_runtime.features import embed_audio
    from edge_runtime.sessions import load_sessions

    out = tmp_path / "int8"
    manifest = q.quantize_model_dir(mn04_dir, esc10_dir / "audio", out, calib_files=16,
                                    check_files=6)
    section = manifest.quantization
    assert section["check"]["mean_cosine"] >= q.MIN_MEAN_COSINE
    assert section["calibration"]["files"] == 16 and section["check"]["held_out_files"] == 6
    assert section["calibration"]["data_dir"] == "audio"  # a folder name, no build-machine path
    # mn04's log-mel front end is its own graph: copied float, byte for byte; in the backbone
    # only the network's first convolution stays float
    src, dst = (json.loads((d / "manifest.json").read_text())["files"] for d in (mn04_dir, out))
    assert dst["frontend"]["sha256"] == src["frontend"]["sha256"]
    graph = onnx.load(str(out / "backbone.onnx"))
    assert [n.op_type for n in graph.graph.node
            if n.name in set(section["excluded_nodes"])].count("Conv") == 1
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    front = [n for n in graph.graph.node if n.name in set(section["excluded_nodes"])]
    assert front and all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in front)
    def backbone_bytes(model_dir: Path) -> int:  # the graph and its external weights
        files = json.loads((model_dir / "manifest.json").read_text())["files"]
        return sum(files[r]["bytes"] for r in ("backbone", "backbone_data") if r in files)

    assert backbone_bytes(out) < backbone_bytes(mn04_dir)
    sessions = load_sessions(out, "cpu")  # the runtime loads it like any model (sha256 checked)
    emb, spans = embed_audio(sessions, np.zeros(32000 * 5, np.float32))
    assert emb.shape == (1, 384) and spans == [(0, 5)]


def test_gate_refuses_and_writes_nothing(mn04_dir: Path, esc10_dir: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "int8"
    with pytest.raises(q.QuantizationRefused, match="too far from fp32"):
        q.quantize_model_dir(mn04_dir, esc10_dir / "audio", out, calib_files=8, check_files=4,
                             min_mean=1.01)
    assert not out.exists(), "a refused quantize leaves no folder behind"


def test_unreadable_calibration_file_is_skipped_with_a_warning(tmp_path: Path, caplog) -> None:
    import soundfile as sf

    good = tmp_path / "good.wav"
    sf.write(good, np.zeros(40000, np.float32), 32000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    reader = q.ChunkReader([bad, good], 32000, 32000)
    assert reader.chunks.shape == (2, 32000)
    assert "bad.wav" in caplog.text
    with pytest.raises(ValueError, match="no readable calibration audio"):
        q.ChunkReader([bad], 32000, 32000)


def test_a_trained_model_dir_quantizes_with_its_end_to_end(mn04_model_dir: Path,
                                                          esc10_dir: Path,
                                                          tmp_path: Path) -> None:
    """A built model dir (classifier + end_to_end) → int8 dir whose rebuilt end_to_end.onnx
    runs the int8 backbone, and the Detector loads it (every sha256 verified)."""
    import onnxruntime as ort

    from edge_runtime.detector import Detector

    out = tmp_path / "int8"
    manifest = q.quantize_model_dir(mn04_model_dir, esc10_dir / "audio", out, calib_files=8,
                                    check_files=4)
    assert "classifier" in manifest.files and "end_to_end" not in manifest.files
    e2e_path = out / manifest.workbench["end_to_end"].path
    assert manifest.workbench["end_to_end"].sha256 != \
        load_manifest(mn04_model_dir).workbench["end_to_end"].sha256
    e2e = onnx.load(str(e2e_path))
    assert "QuantizeLinear" in {n.op_type for n in e2e.graph.node}
    sess = ort.InferenceSession(str(e2e_path), providers=["CPUExecutionProvider"])
    p = sess.run(["p_danger"], {"waveform": np.zeros((1, 32000 * 5), np.float32)})[0]
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0
    dog = sorted((esc10_dir / "audio").glob("1-100032-A-0.*"))[0]  # an ESC-10 dog clip
    assert Detector(out, provider="cpu").predict(dog).label == "danger"


def test_cnn14_pools_and_pooling_go_int8(cnn14_model_dir: Path, esc10_dir: Path,
                                         tmp_path: Path) -> None:
    """Cnn14: its five 2×2 average pools run as int8 depthwise convs (the 1×1 one is gone), its
    2048 × 2048 fc1 in the pooling graph as a dynamic int8 product; the gate still holds."""
    from edge_runtime.sessions import load_sessions

    out = tmp_path / "int8"
    manifest = q.quantize_model_dir(cnn14_model_dir, esc10_dir / "audio", out, calib_files=4,
                                    check_files=4)
    section = manifest.quantization
    assert section["rewrites"] == {"depthwise": 5, "identity_removed": 1, "pooling_matmuls": 1}
    assert section["quantized_roles"] == ["backbone", "pooling"]
    assert section["check"]["mean_cosine"] >= q.MIN_MEAN_COSINE
    backbone = {n.op_type for n in onnx.load(str(out / "backbone.onnx")).graph.node}
    assert "AveragePool" not in backbone
    pooling = {n.op_type for n in onnx.load(str(out / "pooling.onnx")).graph.node}
    assert pooling & {"DynamicQuantizeLinear", "MatMulInteger"} and "Gemm" not in pooling
    fp32 = load_manifest(cnn14_model_dir).files
    assert manifest.files["pooling_data"].bytes < fp32["pooling_data"].bytes / 3
    assert manifest.files["head"].sha256 == fp32["head"].sha256  # copied, not quantized
    sessions = load_sessions(out, "cpu")  # sha256 of every file checked
    assert sessions.pooling is not None
