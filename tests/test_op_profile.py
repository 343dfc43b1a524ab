"""benchmarks.op_profile: onnxruntime's profiler events summed per part (front end, Q/DQ,
network) and op type, on a real (tiny) graph run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import op_profile


def tiny_graph(path: Path) -> None:
    """waveform → Mul → Log → MatMul → Quantize/DequantizeLinear → frames."""
    nodes = [helper.make_node("Mul", ["waveform", "waveform"], ["power"], name="power"),
             helper.make_node("Log", ["power"], ["logp"], name="log"),
             helper.make_node("MatMul", ["logp", "w"], ["y"], name="net"),
             helper.make_node("QuantizeLinear", ["y", "s"], ["q"], name="q"),
             helper.make_node("DequantizeLinear", ["q", "s"], ["frames"], name="dq")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("frames", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(np.ones((8, 4), np.float32), "w"),
                     numpy_helper.from_array(np.array(0.1, np.float32), "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_kernel_times_are_grouped_by_part_and_op(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    tiny_graph(path)
    events = op_profile.profile(path, np.ones((1, 8), np.float32), threads=1, runs=3)
    assert {e["node"] for e in events} <= {"power", "log", "net", "q", "dq"}
    assert len([e for e in events if e["node"] == "net"]) == 3  # the warm-up run is left out
    rows = op_profile.table(events, front={"power", "log"}, runs=3)
    parts = {(r["part"], r["op"]) for r in rows}
    assert ("front end", "Log") in parts and ("network", "MatMul") in parts
    assert {p for p, _ in parts} <= {"front end", "network", "Q/DQ"}
    assert abs(sum(r["share"] for r in rows) - 1.0) < 1e-9
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
