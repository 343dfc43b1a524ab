"""onnxruntime execution-provider choice: auto picks the best available, falls back to CPU."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

CHOICES = ("auto", "cpu", "cuda", "tensorrt")
_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

# TensorRT runs fp16; these op types stay out of it (on CUDA, fp32): the log-mel front end's
# power, mel MatMul, clamp and Log, whose range (power up to ~1e5, quiet bins ~1e-10) fp16 cannot
# hold. The STFT convs and mn04's power Mul share op types with the network and do run fp16.
TRT_FP32_OPS = "Pow,MatMul,Clip,Log"
LEAN_LOAD_MIN_BYTES = 64 << 20  # weights at least this big load without NCHWc (see below)


def available() -> list[str]:
    """Providers compiled into the installed onnxruntime."""
    return list(ort.get_available_providers())


def resolve(choice: str, trt_cache_dir: str | os.PathLike[str] | None = None) -> list:
    """Provider list for onnxruntime: the requested one(s) first, CPU always last.

    ``auto`` tries TensorRT, then CUDA, then CPU. An explicit GPU choice that this onnxruntime
    lacks is logged and falls back to CPU rather than failing.
    """
    choice = choice.lower()
    if choice not in CHOICES:
        raise ValueError(f"unknown provider {choice!r}; choose one of {', '.join(CHOICES)}")
    have = set(available())
    wanted = ["tensorrt", "cuda"] if choice == "auto" else ([choice] if choice != "cpu" else [])
    if choice == "tensorrt":
        wanted.append("cuda")  # ops kept out of TensorRT run on CUDA (fp32), not on the CPU
    chosen: list = []
    for name in wanted:
        ep = _NAMES[name]
        if ep not in have:
            if choice != "auto":
                log.warning("provider %s is not available in this onnxruntime; using CPU", ep)
            continue
        if name == "tensorrt":
            cache = Path(trt_cache_dir or Path.home() / ".cache" / "edge-detect" / "trt")
            cache.mkdir(parents=True, exist_ok=True)
            chosen.append((ep, {"trt_engine_cache_enable": True,
                                "trt_engine_cache_path": str(cache),
                                "trt_fp16_enable": True,
                                "trt_op_types_to_exclude": TRT_FP32_OPS}))
        else:
            chosen.append(ep)
    chosen.append("CPUExecutionProvider")
    return chosen


MAX_THREADS = min(64, 4 * (os.cpu_count() or 1))  # more only starves the machine


def ort_message(exc: BaseException, limit: int = 240) -> str:
    """An onnxruntime exception as one short line: its first line without the
    ``[ONNXRuntimeError] : 1 : FAIL :`` prefix and the C++ source locations."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", first)
    first = re.sub(r"\S*onnxruntime_src/\S+:\d+ ", "", first)
    return first[:limit]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options: full graph optimisation and ``threads`` intra-op threads (None: default)."""
    if threads is not None and not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be in [1, {MAX_THREADS}], got {threads}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 4  # fatal only: a failure raises, and callers say it in one line
    # Each session has its own intra-op pool; spinning pools of the backbone, pooling, head and
    # classifier sessions run back-to-back and steal each other's cores. Measured on 2 cores
    # (Cnn14 fp32, 5 s clip through backbone+pooling+head): 167 ms spinning vs 64 ms without.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


def disabled_optimizers(path: str | os.PathLike[str]) -> list[str]:
    """Graph optimisers to skip for ``path``: NCHWc for graphs with big weights.

    onnxruntime's NchwcTransformer (level 3) rewrites every float Conv into its blocked NCHWc
    layout at load, making reordered copies of the conv weights while the originals and the
    session's own copies are alive: Cnn14 fp32 (306 MB of weights) peaked at 1140 MB while
    loading for 432 MB resident (benchmarks/README.md, load-time memory). Without it, with the
    weights memory-mapped from ``<graph>.onnx.data``, the load peak is the resident size. It buys
    speed (mn04 ~20 %, Cnn14 ~13 % on one x86 core, shared machine), so it is kept for graphs
    whose weights are under LEAN_LOAD_MIN_BYTES, where the copies cost little.
    """
    data = Path(f"{path}.data")
    size = data.stat().st_size if data.is_file() else Path(path).stat().st_size
    return ["NchwcTransformer"] if size >= LEAN_LOAD_MIN_BYTES else []


def open_session(path: str | os.PathLike[str], providers: list,
                 threads: int | None = None) -> ort.InferenceSession:
    """An InferenceSession for ``path``; the log names the provider that actually runs."""
    sess = ort.InferenceSession(str(path), sess_options=session_options(threads),
                                providers=providers,
                                disabled_optimizers=disabled_optimizers(path))
    log.debug("%s runs on %s", Path(path).name, sess.get_providers()[0])
    return sess
