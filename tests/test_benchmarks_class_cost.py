"""benchmarks.class_cost's rounds: medians per model and the median of per-round ratios (the
arithmetic only; timings are measured by the benchmark itself, never in tests)."""

from __future__ import annotations

import pytest

from benchmarks.class_cost import combine, markdown


def run(model: str, one: float, default: float, rss: float) -> dict:
    return {"model": model, "classes": model == "class", "window_embedding": "whole",
            "window_stride": 2, "frontend_graph": True, "gain_graph": model == "class",
            "peak_rss_mb": rss, "resident_mb": rss,
            "hop": [{"threads": 1, "ms_per_audio_s": one},
                    {"threads": "default", "ms_per_audio_s": default}]}


def test_rounds_give_medians_and_the_median_of_per_round_ratios() -> None:
    # round 2 was disturbed for both models alike: its ratio is still 1.2
    rounds = [[run("binary", 2.0, 2.5, 84), run("class", 2.4, 3.0, 92)],
              [run("binary", 4.0, 5.0, 84), run("class", 4.8, 6.0, 92)],
              [run("binary", 2.2, 2.6, 85), run("class", 2.2, 2.7, 91)]]
    binary, cls = combine(rounds)
    assert binary["hop"][0]["ms_per_audio_s"] == pytest.approx(2.2)
    assert cls["hop"][0]["ms_per_audio_s"] == pytest.approx(2.4)
    assert cls["hop"][1]["ms_per_audio_s"] == pytest.approx(3.0)
    assert cls["rounds_ratio_to_first_1_thread"] == pytest.approx([1.2, 1.2, 1.0])
    assert cls["ratio_to_first_1_thread"] == pytest.approx(1.2)
    assert binary["ratio_to_first_1_thread"] == 1.0
    assert cls["peak_rss_mb"] == 92 and binary["peak_rss_mb"] == 84
    table = markdown([binary, cls])
    assert ("| class | yes | whole, every 2 chunk(s), frontend.onnx, gain.onnx | 2.40 | 3.00 | "
            "1.20× | 92 |") in table
    assert "| binary | no | whole, every 2 chunk(s), frontend.onnx | 2.20 |" in table
