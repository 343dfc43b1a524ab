"""``gain.onnx``: a normalised log-mel as if its audio had been scaled by a gain.

A front end that outputs ``y = (log(mel + offset) + shift) / scale`` gives, for audio scaled by
``g`` dB, ``y' = (log(mel · 10^(g/10) + offset) + shift) / scale`` with ``mel = exp(scale·y −
shift) − offset`` (clipped at 0). Exact up to float32 rounding: the device scales a whole window
this way from its chunks' cached log-mels instead of running the front end again on the scaled
audio (the front end is most of mn04's per-chunk work).
"""

from __future__ import annotations

import math

import onnx
from onnx import TensorProto, helper

from edge_runtime.loudness import GAIN_INPUTS
from export.onnx_export import OPSET

INPUT, GAIN_INPUT = GAIN_INPUTS
OUTPUT = "log_mel_at_gain"


def log_mel_gain_graph(offset: float, shift: float, scale: float, mels: int) -> onnx.ModelProto:
    """``log_mel [batch, mels, time]``, ``gain_db [batch]`` → ``log_mel_at_gain`` (same shape)."""
    consts = {"offset": offset, "shift": shift, "scale": scale, "db_to_ln": math.log(10) / 10}
    nodes = [
        helper.make_node("Mul", [GAIN_INPUT, "db_to_ln"], ["ln_gain"]),
        helper.make_node("Exp", ["ln_gain"], ["power_gain"]),
        helper.make_node("Unsqueeze", ["power_gain", "axes12"], ["power_gain3"]),
        helper.make_node("Mul", [INPUT, "scale"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "shift"], ["log_power"]),
        helper.make_node("Exp", ["log_power"], ["power_offset"]),
        helper.make_node("Sub", ["power_offset", "offset"], ["power_raw"]),
        helper.make_node("Relu", ["power_raw"], ["power"]),
        helper.make_node("Mul", ["power", "power_gain3"], ["power_at_gain"]),
        helper.make_node("Add", ["power_at_gain", "offset"], ["power_at_gain_offset"]),
        helper.make_node("Log", ["power_at_gain_offset"], ["log_at_gain"]),
        helper.make_node("Add", ["log_at_gain", "shift"], ["shifted"]),
        helper.make_node("Div", ["shifted", "scale"], [OUTPUT]),
    ]
    inits = [helper.make_tensor(k, TensorProto.FLOAT, [], [v]) for k, v in consts.items()]
    inits.append(helper.make_tensor("axes12", TensorProto.INT64, [2], [1, 2]))
    graph = helper.make_graph(
        nodes, "log_mel_gain",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", mels, "time"]),
         helper.make_tensor_value_info(GAIN_INPUT, TensorProto.FLOAT, ["batch"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", mels, "time"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model
