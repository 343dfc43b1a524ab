"""Benchmark harness: provider fallback, repeat budgeting, and a --fast run writing valid JSON.

No timing thresholds here (speed is what the benchmark reports, not what tests assert).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run as bench
from benchmarks.harness import Budget, provider_skip_reason, time_runs
from edge_runtime import providers
from edge_runtime.atomic import write_json


def fake_model_dir(tmp_path: Path) -> Path:
    """A manifest-only model dir: enough for planning (no graphs are opened)."""
    entry = {"path": "backbone.onnx", "sha256": "0" * 64, "bytes": 1000}
    write_json(tmp_path / "manifest.json", {
        "format": "edge-detect-model", "format_version": 1,
        "backbone": {"name": "cnn14", "checkpoint": {}, "frame_dim": 2048,
                     "embedding_dim": 2048},
        "input": {"sample_rate": 32000, "min_samples": 3200},
        "streaming": {"chunk_samples": 32000, "window_chunks": 5},
        "files": {"backbone": entry, "pooling": {**entry, "path": "pooling.onnx"}}})
    return tmp_path


def test_gpu_providers_absent_are_skipped_with_a_reason(tmp_path: Path) -> None:
    jobs, skipped = bench.plan([fake_model_dir(tmp_path)], [], bench.FAST,
                               ["CPUExecutionProvider"])
    assert [(j["engine"], j["provider"]) for j in jobs] == [("onnx", "cpu")]
    reasons = {s["label"]: s["reason"] for s in skipped}
    assert "CUDAExecutionProvider is not in this onnxruntime" in reasons["cnn14 fp32 onnx cuda"]
    assert "TensorrtExecutionProvider" in reasons["cnn14 fp32 onnx tensorrt"]
    assert "checkpoint not found" in reasons["cnn14 fp32 torch"]


def test_gpu_providers_present_are_planned(tmp_path: Path) -> None:
    have = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    jobs, _ = bench.plan([fake_model_dir(tmp_path)], [], bench.FAST, have)
    assert [j["provider"] for j in jobs] == ["cpu", "cuda", "tensorrt"]
    assert provider_skip_reason("cuda", have) is None


def test_runtime_provider_resolution_falls_back_to_cpu(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(providers, "available", lambda: ["CPUExecutionProvider"])
    assert providers.resolve("cuda") == ["CPUExecutionProvider"]
    assert providers.resolve("tensorrt", tmp_path) == ["CPUExecutionProvider"]
    monkeypatch.setattr(providers, "available", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    trt, cuda, cpu = providers.resolve("tensorrt", tmp_path / "trt")
    assert trt[0] == "TensorrtExecutionProvider" and trt[1]["trt_fp16_enable"] is True
    assert "Log" in trt[1]["trt_op_types_to_exclude"]
    assert (cuda, cpu) == ("CUDAExecutionProvider", "CPUExecutionProvider")


@pytest.mark.parametrize(("budget", "expected"), [
    (Budget(warmup=2, min_repeats=3, max_repeats=10, budget_s=0.0), 3),
    (Budget(warmup=0, min_repeats=1, max_repeats=4, budget_s=1e9), 4),
])
def test_time_runs_respects_repeat_counts(budget: Budget, expected: int) -> None:
    calls = []
    times = time_runs(lambda: calls.append(1), budget)
    assert len(times) == expected
    assert len(calls) == expected + budget.warmup
    assert all(t >= 0 for t in times)


def test_fast_run_writes_valid_results(cnn14_model_dir: Path, cnn14_checkpoint: Path,
                                       tmp_path: Path) -> None:
    """Random-init Cnn14 (plumbing only): torch + ONNX CPU jobs run, GPU ones are skipped."""
    code = bench.main(["--fast", "--model", str(cnn14_model_dir), "--weights",
                       str(cnn14_checkpoint), "--out", str(tmp_path), "--name", "ci"])
    assert code == 0
    results = json.loads((tmp_path / "ci.json").read_text())
    engines = {(r["engine"], r["provider_requested"]) for r in results["runs"]}
    assert engines == {("torch", "cpu"), ("onnx", "cpu")}
    for r in results["runs"]:
        (cell,) = r["configs"]
        assert (cell["clip_s"], cell["batch"], cell["repeats"]) == (1.0, 1, 2)
        assert cell["median_s"] > 0 and cell["peak_rss_mb"] > 0 and r["startup_s"] > 0
    onnx_run = next(r for r in results["runs"] if r["engine"] == "onnx")
    assert {d["threads_setting"] for d in onnx_run["daemon"]} == {1, "default"}
    one = onnx_run["reference_1_thread"]  # the 5 s headline cell again, 1 thread
    assert (one["clip_s"], one["batch"], one["threads"]) == (5.0, 1, 1) and one["median_s"] > 0
    assert results["machine"]["onnxruntime_providers"]
    assert {s["label"] for s in results["skipped"]} >= {"cnn14 fp32 onnx cuda"} or \
        "CUDAExecutionProvider" in results["machine"]["onnxruntime_providers"]
    assert "| cnn14 | fp32 | onnx cpu | 1 | 1 |" in (tmp_path / "ci.md").read_text()
    assert (tmp_path / "ci.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_model_dir_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert bench.main(["--fast", "--model", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no manifest.json" in err


def test_short_settings_keep_the_reference_cell() -> None:
    settings = bench.short_settings([1.0], [8], 0.5)
    assert (settings["clips"], settings["batches"]) == ([1.0, 5.0], [1, 8])
    assert settings["budget"]["budget_s"] == 0.5 and settings["mode"] == "short"
    assert bench.FULL["budget"]["budget_s"] == 2.5  # FULL itself untouched
    assert "mode" not in bench.short_settings(None, None, None)


def test_int8_ratios_are_fp32_over_int8_of_the_same_run() -> None:
    from benchmarks import report

    def run(precision: str, clip_ms: float, one_thread_ms: float,
            daemon_ms: tuple[float, float]) -> dict:
        return {"backbone": "cnn14", "engine": "onnx", "precision": precision,
                "provider_requested": "cpu", "backbone_mb": 1.0,
                "configs": [{"clip_s": 5.0, "batch": 1, "median_s": clip_ms / 1000}],
                "reference_1_thread": {"median_s": one_thread_ms / 1000},
                "daemon": [{"threads_setting": 1, "compute_ms_per_audio_s": daemon_ms[0]},
                           {"threads_setting": "default",
                            "compute_ms_per_audio_s": daemon_ms[1]}]}

    summary = report.summary([run("fp32", 60.0, 180.0, (56.0, 30.0)),
                              run("int8", 20.0, 50.0, (14.0, 10.0))])["cnn14"]
    assert summary["int8_vs_fp32_speedup"] == pytest.approx(3.0)
    assert summary["int8_vs_fp32_speedup_1_thread"] == pytest.approx(3.6)
    assert summary["daemon_int8_vs_fp32_speedup"] == pytest.approx({"1": 4.0, "default": 3.0})
    lines = report._int8_lines({"cnn14": summary})
    assert lines[-1] == "| cnn14 | 3.00× | 3.60× | 4.00× | 3.00× |"


def test_onnx_chain_and_backbone_memory_run_a_split_front_end(mn04_model_dir: Path) -> None:
    """mn04's backbone.onnx reads frontend.onnx's log-mel: the benchmarked ONNX chain runs the
    front end first (same tags as the runtime's own path), and the backbone-alone memory child
    feeds it a log-mel, not a waveform."""
    import numpy as np

    from benchmarks import engines, load_memory
    from edge_runtime.features import embed_offline
    from edge_runtime.sessions import run1

    sessions = engines.onnx_sessions(mn04_model_dir, "cpu", 1)
    assert sessions.frontend is not None
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, 32000))).astype(np.float32)
    got = engines.onnx_runner(sessions)(audio)
    want = np.stack([run1(sessions.head, embed_offline(sessions, a)[None])[0] for a in audio])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    row = load_memory.child_graph(str(mn04_model_dir / "backbone.onnx"), nchwc=True)
    assert row["resident_mb"] > 0

