"""Directory mode on real ESC-10 clips (../shared/esc10), and the 30 s acceptance stream with the
real (random-init) Cnn14 backbone plus a classifier fitted here with sklearn → skl2onnx.

Random-init weights: the classifier is fitted on the very clips and stream windows it is then
run on, so it separates them by construction — this checks the device plumbing end to end (real
audio, real Cnn14 graph, streamed windows, events), not detection quality.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import ended_events
from tests.runtime_model import build_tiny_model

DANGER = ["dog", "chainsaw", "crying_baby"]
SAFE = ["rain", "sea_waves", "clock_tick"]


def pick(esc10_dir: Path, categories: list[str], n: int) -> list[Path]:
    with open(esc10_dir / "meta" / "esc50.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] in categories]
    rows.sort(key=lambda r: (categories.index(r["category"]), r["filename"]))
    by_cat: dict[str, list[Path]] = {}
    for r in rows:
        path = esc10_dir / "audio" / (Path(r["filename"]).stem + ".flac")
        if path.exists():
            by_cat.setdefault(r["category"], []).append(path)
    out: list[Path] = []
    while len(out) < n and any(by_cat.values()):
        for cat in categories:
            if by_cat.get(cat) and len(out) < n:
                out.append(by_cat[cat].pop(0))
    return out


def link_clips(paths: list[Path], d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for p in paths:
        os.symlink(p, d / p.name)  # no copies of the shared audio
    return d


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *args],
                          capture_output=True, text=True, timeout=300)


def test_directory_once_on_esc10_clips(esc10_dir: Path, tmp_path: Path) -> None:
    clips = pick(esc10_dir, DANGER + SAFE, 6)
    d = link_clips(clips, tmp_path / "in")
    model = build_tiny_model(tmp_path / "tiny", threshold=0.0)  # every window is "danger"
    events = tmp_path / "events.jsonl"
    res = run_cli("--model", str(model), "--input", str(d), "--once", "--events", str(events))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    recs = ended_events(events)
    assert sorted(Path(r["source"]).name for r in recs) == sorted(p.name for p in clips)
    for r in recs:
        assert r["offset_start_s"] == 0.0 and r["offset_end_s"] == pytest.approx(5.0)


@pytest.fixture(scope="module")
def esc_setup(esc10_dir: Path, cnn14_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """Clips, a 30 s stream (danger clip at 10-15 s) and a model dir whose classifier
    separates them (fitted on their Cnn14 window embeddings)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from edge_runtime.features import embed_audio
    from edge_runtime.manifest import file_entry, load_manifest, write_json_atomic
    from edge_runtime.sessions import load_sessions
    from training.onnx_classifier import save_atomic, to_onnx

    root = tmp_path_factory.mktemp("esc_runtime")
    danger, safe = pick(esc10_dir, DANGER, 3), pick(esc10_dir, SAFE, 3)
    stream_parts = [safe[0], safe[1], danger[0], safe[2], safe[0], safe[1]]
    stream = np.concatenate([sf.read(p, dtype="float32")[0] for p in stream_parts])
    assert stream.size == 30 * 32000
    sf.write(root / "stream.flac", stream, 32000)

    sessions = load_sessions(cnn14_model_dir, "cpu", with_classifier=False)
    x, y = [], []
    for path, label in [(p, 1) for p in danger] + [(p, 0) for p in safe]:
        emb, _ = embed_audio(sessions, sf.read(path, dtype="float32")[0])
        x.append(emb[0])
        y.append(label)
    emb, spans = embed_audio(sessions, stream)
    for e, (s, t) in zip(emb, spans, strict=True):
        x.append(e)
        y.append(int(s < 15 and t > 10))
    pipe = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=10.0,
                                                                              max_iter=5000))])
    pipe.fit(np.stack(x), np.array(y))
    assert (pipe.predict(np.stack(x)) == np.array(y)).all(), "classifier does not separate"

    model = root / "model"
    model.mkdir()
    manifest = load_manifest(cnn14_model_dir)
    for entry in manifest["files"].values():
        os.symlink(cnn14_model_dir / entry["path"], model / entry["path"])
    save_atomic(to_onnx(pipe, np.stack(x).shape[1]), model / "classifier.onnx")
    manifest["files"]["classifier"] = file_entry(model, "classifier.onnx")
    manifest["classifier"] = {"kind": "logreg (test fixture)", "threshold": 0.5}
    write_json_atomic(model / "manifest.json", manifest)
    return {"model": model, "danger": danger, "safe": safe, "stream": root / "stream.flac"}


@pytest.mark.slow
def test_esc10_directory_flags_the_danger_clips(esc_setup, tmp_path: Path) -> None:
    d = link_clips(esc_setup["danger"] + esc_setup["safe"], tmp_path / "in")
    events = tmp_path / "events.jsonl"
    res = run_cli("--model", str(esc_setup["model"]), "--input", str(d), "--once",
                  "--events", str(events), "--threads", "2")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    flagged = sorted(Path(r["source"]).name for r in ended_events(events))
    assert flagged == sorted(p.name for p in esc_setup["danger"])


@pytest.mark.slow
def test_esc10_acceptance_stream_one_event_at_ten_seconds(esc_setup, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    res = run_cli("--model", str(esc_setup["model"]), "--input", str(esc_setup["stream"]),
                  "--events", str(events), "--threads", "2")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    (rec,) = ended_events(events)
    assert abs(rec["offset_start_s"] - 10.0) <= 1.0, rec
    assert abs(rec["offset_end_s"] - 15.0) <= 1.0, rec
    assert len(rec["tags"]) == 3 and all(t["name"] for t in rec["tags"])
