"""``import panns_inference`` runs wget for a labels CSV; offline that must not hang or fail."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_panns_import_never_calls_wget(tmp_path: Path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    marker = tmp_path / "wget_was_called"
    wget = fake_bin / "wget"
    wget.write_text(f"#!/bin/sh\ntouch {marker}\nsleep 30\nexit 4\n")
    wget.chmod(0o755)
    home = tmp_path / "home"  # no ~/panns_data yet
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    code = textwrap.dedent("""
        from export.panns import panns_models
        models = panns_models()
        import panns_inference
        assert len(panns_inference.labels) == 527, len(panns_inference.labels)
        print(panns_inference.labels[0])
    """)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "Speech"
    assert not marker.exists(), "panns_inference tried to download its labels"
    assert (home / "panns_data" / "class_labels_indices.csv").is_file()
