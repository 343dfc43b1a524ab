"""The device package never pulls in the training stack."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import edge_runtime

FORBIDDEN = ["torch", "sklearn", "librosa", "panns_inference", "torchlibrosa", "skl2onnx",
             "onnx", "export", "training",
             "pyspark", "py4j", "pandas", "pyarrow"]  # the spark extra: only with --spark


def test_edge_runtime_imports_no_training_stack() -> None:
    modules = sorted(m.name for m in pkgutil.iter_modules(edge_runtime.__path__))
    assert {"cli", "detector", "audio", "events", "sinks", "sources", "mic"} <= set(modules)
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module('edge_runtime.' + m)\n"
        "print(json.dumps(sorted(k for k in sys.modules)))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    loaded = set(json.loads(res.stdout))
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not bad, f"edge_runtime imported {bad}"
    # optional integrations are imported only when used (the mqtt extra may be absent)
    assert "paho" not in {m.split(".")[0] for m in loaded}


def test_onnxruntime_keeps_no_telemetry_id(tmp_path) -> None:
    """onnxruntime's telemetry writes a device id and an event cache under ~/.cache/Microsoft
    (and says "Failed to persist telemetry device ID" where it cannot): the runtime opts out."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(tmp_path)
    code = ("import edge_runtime.sessions, onnxruntime as ort, pathlib, sys\n"
            "from tests.runtime_model import build_tiny_model\n"
            "m = build_tiny_model(pathlib.Path(sys.argv[1]))\n"
            "ort.InferenceSession(str(next(m.glob('*.onnx'))), providers=['CPUExecutionProvider'])")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "model")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / ".cache" / "Microsoft").exists()
    assert "telemetry" not in done.stderr
