"""``edge-train build`` outputs (report, plots, manifest) and its one-line CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from training.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_build_writes_report_and_plots(trained_model_dir: Path) -> None:
    report = json.loads((trained_model_dir / "report.json").read_text(encoding="utf-8"))
    assert set(report["results"]) == {"logreg", "rf", "mlp"}
    assert report["clips"] == 60
    assert report["class_counts"] == {"danger": 30, "safe": 30}
    for result in report["results"].values():
        assert [f["fold"] for f in result["per_fold"]] == [1, 2, 3, 4, 5]
        for key in ("accuracy", "balanced_accuracy", "danger_recall", "danger_precision",
                    "roc_auc", "confusion"):
            assert key in result["at_0.5"]
        assert result["at_threshold"]["danger_recall"] >= 0.95
        assert sum(map(sum, result["at_threshold"]["confusion"])) == 60
    assert len(report["out_of_fold"]["logreg"]) == 60
    assert report["parity"]["max_abs_diff"] <= 1e-5
    assert report["end_to_end"]["max_abs_diff_vs_device_path"] <= 1e-4
    for name in ("confusion_matrix.png", "roc_pr.png"):
        data = (trained_model_dir / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    md = (trained_model_dir / "report.md").read_text(encoding="utf-8")
    assert "| **logreg** |" in md and "| rf |" in md and "| mlp |" in md


def test_build_cli_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["build", "--data", str(tmp_path / "nowhere"),
                                  "--out", str(tmp_path / "m")])
    assert result.exit_code == 2
    assert "esc50.csv: not found" in result.output
    assert "Traceback" not in result.output

    mapping = tmp_path / "m.toml"
    mapping.write_text('danger = ["laser"]\nsafe = ["rain"]\n', encoding="utf-8")
    result = runner.invoke(main, ["build", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                                  "--mapping", str(mapping)])
    assert result.exit_code == 2
    assert "unknown ESC-50 category in 'danger': laser" in result.output
    assert len(result.output.strip().splitlines()) == 1
