"""``edge-train stream-eval``: leave-one-fold-out CV through the daemon's own streaming code.

For each ESC-50 fold k: fit the model dir's classifier kind on the other folds' cached
embeddings, choose its threshold by an inner leave-one-fold-out on those folds only (fold k
never influences it), export it with ``to_onnx`` into a per-fold model dir (the base ONNX files
linked, ``classifier.onnx`` and the manifest written with the training code's functions), then
score fold k's audio files from disk two ways:

* ``Detector(model_dir).predict(path)`` — the runtime API (file decode → ``ChunkBuffer`` →
  ``FrameWindow`` → ``features.chunk_frames``/``pool_window`` → ``classifier.onnx``), giving
  p(danger) per clip for AUC and accuracy;
* the ``edge-detect`` command itself (``--input DIR --once --events FILE.jsonl``) in a
  subprocess on a folder holding fold k's clips: a clip counts as danger iff the daemon wrote
  an event for it (same event rules as in the field: threshold, hysteresis, min duration).

Both are compared with the training pipeline's own out-of-fold probability for the clip (the
sklearn pipeline on the cached training embedding): same decisions means the device serves the
features it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edge_runtime.manifest import file_entry, load_manifest, write_json_atomic
from training import classifiers, evaluate
from training.build import WORKBENCH, clean_json, save_report
from training.dataset import Clip, read_dataset
from training.embed import Embeddings, embed_clips
from training.mapping import Mapping, binary_mapping, validate
from training.onnx_classifier import save_atomic, to_onnx

log = logging.getLogger(__name__)

BASE_ROLES = ("backbone", "pooling", "head", "labels", "backbone_data", "pooling_data",
              "head_data")


def manifest_mapping(manifest: dict[str, Any]) -> Mapping:
    """The danger/safe mapping the model dir was trained with (default if it has none)."""
    section = (manifest.get("classifier") or {}).get("mapping")
    if not section:
        return binary_mapping()
    return validate(list(section["danger"]), list(section["safe"]),
                    str(section.get("source", "manifest")))


def fit_held_out(emb: Embeddings, kind: str, held_out: int, seed: int = 0,
                 target_recall: float = evaluate.DEFAULT_TARGET_RECALL):
    """Pipeline fitted without fold ``held_out``; threshold from an inner fold CV on the rest.

    Returns ``(pipeline, threshold, train_mask)``.
    """
    train = emb.fold != held_out
    if not train.any() or train.all():
        raise ValueError(f"fold {held_out}: need clips both in it and outside it")
    inner_folds = np.unique(emb.fold[train])
    pipeline = classifiers.make_pipeline(kind, seed)
    if len(inner_folds) >= 2:
        inner = evaluate.evaluate(pipeline, emb.x[train], emb.label[train], emb.fold[train],
                                  target_recall)
        threshold = float(inner["threshold"])
    else:
        threshold = 0.5
    fitted = classifiers.make_pipeline(kind, seed).fit(emb.x[train], emb.label[train])
    return fitted, threshold, train


def fold_model_dir(base: Path, dest: Path, pipeline, dim: int, threshold: float,
                   section: dict[str, Any]) -> Path:
    """A model dir at ``dest``: ``base``'s backbone/pooling/head/labels (symlinked, copied if
    links fail) plus this ``pipeline`` as ``classifier.onnx``; manifest rewritten atomically."""
    base = Path(base).resolve()
    manifest = load_manifest(base)
    dest.mkdir(parents=True, exist_ok=True)
    files = {}
    for role in BASE_ROLES:
        entry = manifest["files"].get(role)
        if entry is None:
            continue
        target = dest / entry["path"]
        target.unlink(missing_ok=True)
        try:
            os.symlink(base / entry["path"], target)
        except OSError:
            shutil.copy2(base / entry["path"], target)
        files[role] = entry
    save_atomic(to_onnx(pipeline, dim), dest / "classifier.onnx")
    files["classifier"] = file_entry(dest, "classifier.onnx")
    manifest = {k: v for k, v in manifest.items() if k != "quantization"}
    manifest["files"] = files
    manifest["classifier"] = {**section, "threshold": float(threshold)}
    write_json_atomic(dest / "manifest.json", clean_json(manifest))
    return dest


def classifier_section(manifest: dict[str, Any], kind: str, mapping: Mapping, held_out: int,
                       target_recall: float) -> dict[str, Any]:
    """The manifest ``classifier`` section of a fold model (threshold filled in later)."""
    return {"kind": kind, "input": "embedding", "output": "probabilities", "danger_column": 1,
            "threshold_target": {"danger_recall": target_recall},
            "classes": ["safe", "danger"], "mapping": mapping.as_dict(),
            "trained_on": {"held_out_fold": int(held_out), "note": "stream-eval fold model",
                           "base_model": manifest["backbone"]["name"]}}


def daemon_events(model_dir: Path, clips: list[Clip], work: Path,
                  threads: int | None = None) -> dict[str, int]:
    """Run ``edge-detect --input DIR --once --events`` on ``clips``; events per clip filename."""
    folder = work / "input"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for clip in clips:
        os.symlink(Path(clip.path).resolve(), folder / Path(clip.path).name)
    events_path = work / "events.jsonl"
    events_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "edge_runtime.cli", "--input", str(folder), "--once",
           "--settle", "0", "--events", str(events_path), "--model", str(model_dir),
           "--provider", "cpu", "--window-only", "-q"]
    if threads:
        cmd += ["--threads", str(threads)]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"{folder}: edge-detect exited {done.returncode}: {last[0]}")
    counts = {Path(c.path).name: 0 for c in clips}
    if events_path.is_file():
        for line in events_path.read_text(encoding="utf-8").splitlines():
            name = Path(json.loads(line)["source"]).name
            counts[name] = counts.get(name, 0) + 1
    return counts


def summarise(y: np.ndarray, p: np.ndarray, decision: np.ndarray, folds: np.ndarray
              ) -> dict[str, Any]:
    """Fold accuracy at 0.5 (like ``build``), pooled AUC, and metrics of the given decisions."""
    accs = [float(((p[folds == f] >= 0.5) == y[folds == f]).mean()) for f in np.unique(folds)]
    at_05 = evaluate.metrics(y, p, 0.5)
    dec = decision.astype(bool)
    return {
        "fold_accuracy_mean": float(np.mean(accs)), "fold_accuracy_std": float(np.std(accs)),
        "per_fold_accuracy_at_0.5": accs,
        "roc_auc": at_05["roc_auc"], "at_0.5": at_05,
        "at_fold_threshold": {
            "accuracy": float((dec == y.astype(bool)).mean()),
            "danger_recall": float(dec[y == 1].mean()) if (y == 1).any() else float("nan"),
            "false_alarm_rate": float(dec[y == 0].mean()) if (y == 0).any() else float("nan"),
            "false_alarms": int((dec & (y == 0)).sum()),
            "misses": int((~dec & (y == 1)).sum()),
        },
    }


def stream_eval(model_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
                kind: str | None = None, seed: int = 0,
                target_recall: float = evaluate.DEFAULT_TARGET_RECALL,
                per_fold_limit: int | None = None, threads: int | None = None,
                run_daemon: bool = True) -> dict[str, Any]:
    """Leave-one-fold-out through ``Detector`` and the ``edge-detect`` daemon; writes
    ``stream_eval.json`` and ``stream_eval.md`` to ``out`` (default ``<model>/.workbench``)."""
    from edge_runtime.detector import Detector

    model_dir = Path(model_dir)
    out = Path(out) if out is not None else model_dir / WORKBENCH / "stream-eval"
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest = load_manifest(model_dir)
    kind = kind or (manifest.get("classifier") or {}).get("kind") or "logreg"
    if kind not in classifiers.KINDS:
        raise ValueError(f"unknown classifier {kind!r}; choose {', '.join(classifiers.KINDS)}")
    mapping = manifest_mapping(manifest)
    clips = read_dataset(data, mapping, per_fold_limit)
    emb = embed_clips(model_dir, clips, cache_dir=model_dir / WORKBENCH, threads=threads,
                      measure_offline=False)
    if (emb.window != 0).any():
        raise ValueError(f"{data}: clips longer than one window; stream-eval compares one "
                         "decision per clip and needs clips of at most one window")
    by_name = {c.filename: c for c in clips}
    rows = [by_name[name] for name in emb.filename]
    folds = np.unique(emb.fold)
    if len(folds) < 2:
        raise ValueError("stream-eval needs clips from at least two ESC-50 folds")

    n = len(emb)
    p_pipe, p_det, p_chunk = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    events = np.zeros(n, dtype=int)
    thr_row = np.full(n, np.nan)
    per_fold = []
    with tempfile.TemporaryDirectory(prefix="stream-eval-") as tmp:
        for fold in tqdm(folds, desc="stream-eval folds", unit="fold", disable=None):
            pipeline, threshold, train = fit_held_out(emb, kind, int(fold), seed, target_recall)
            test = np.flatnonzero(~train)
            fold_dir = fold_model_dir(model_dir, Path(tmp) / f"fold{fold}" / "model", pipeline,
                                      emb.x.shape[1], threshold,
                                      classifier_section(manifest, kind, mapping, int(fold),
                                                         target_recall))
            p_pipe[test] = pipeline.predict_proba(emb.x[test])[:, 1]
            thr_row[test] = threshold
            detector = Detector(fold_dir, provider="cpu", threads=threads)
            for i in test:  # window p: training's rule; decision p: with chunk decisions
                prediction = detector.predict(rows[i].path)
                p_det[i], p_chunk[i] = prediction.window_probability, prediction.probability
            if run_daemon:
                counts = daemon_events(fold_dir, [rows[i] for i in test],
                                       Path(tmp) / f"fold{fold}", threads)
                events[test] = [counts[Path(rows[i].path).name] for i in test]
            per_fold.append({"fold": int(fold), "threshold": threshold, "clips": len(test),
                             "train_clips": int(train.sum())})
            log.info("fold %d: threshold %.4f, max |p_detector - p_pipeline| %.2e", fold,
                     threshold, np.abs(p_det[test] - p_pipe[test]).max())

    y = emb.label
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_dir": str(model_dir), "backbone": manifest["backbone"]["name"],
        "data": str(data), "kind": kind, "clips": n,
        "class_counts": {"danger": int((y == 1).sum()), "safe": int((y == 0).sum())},
        "scheme": "leave-one-fold-out; per-fold threshold from an inner fold CV on the "
                  "training folds (target danger recall "
                  f"{target_recall}); fold models exported with to_onnx",
        "per_fold": per_fold,
        "pipeline": summarise(y, p_pipe, p_pipe >= thr_row, emb.fold),
        "detector": summarise(y, p_det, p_det >= thr_row, emb.fold),
        "agreement": {
            "max_abs_diff_detector_vs_pipeline": float(np.abs(p_det - p_pipe).max()),
            "decision_disagreements_at_threshold": int(((p_det >= thr_row)
                                                        != (p_pipe >= thr_row)).sum()),
        },
    }
    report["detector_chunk_decisions"] = summarise(y, p_chunk, p_chunk >= thr_row, emb.fold)
    if run_daemon:
        report["daemon"] = summarise(y, p_det, events > 0, emb.fold)
        report["daemon"]["clips_with_events"] = int((events > 0).sum())
        report["agreement"]["daemon_event_vs_detector_threshold_disagreements"] = int(
            ((events > 0) != (p_det >= thr_row)).sum())
    report["per_clip"] = {"filename": emb.filename, "fold": emb.fold, "label": y,
                          "p_pipeline": p_pipe, "p_detector": p_det,
                          "p_detector_chunk_decisions": p_chunk, "events": events,
                          "threshold": thr_row}
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["markdown"] = markdown(report)
    save_report(out, "stream_eval", report, report["markdown"])
    return report


def markdown(report: dict[str, Any]) -> str:
    """The fold-CV table: training pipeline vs Detector vs the edge-detect daemon."""
    lines = [
        f"Leave-one-fold-out, {report['backbone']} + {report['kind']}, {report['clips']} clips "
        f"({report['class_counts']['danger']} danger, {report['class_counts']['safe']} safe).",
        "",
        "| path | fold acc @0.5 (mean ± std) | ROC-AUC | acc @t | danger recall @t | "
        "false alarms @t |",
        "|---|---|---|---|---|---|",
    ]
    names = {"pipeline": "training pipeline (cached embeddings → sklearn)",
             "detector": "Detector.predict(file) → classifier.onnx",
             "daemon": "edge-detect --window-only --once --events (event fired)",
             "detector_chunk_decisions": "Detector.predict(file), chunk decisions (default)"}
    for key, name in names.items():
        if key not in report:
            continue
        r = report[key]
        t = r["at_fold_threshold"]
        fold_acc = (f"{r['fold_accuracy_mean']:.3f} ± {r['fold_accuracy_std']:.3f}"
                    if key != "daemon" else "—")
        auc = f"{r['roc_auc']:.4f}" if key != "daemon" else "— (events are yes/no)"
        if key == "detector_chunk_decisions":
            fold_acc = f"{fold_acc} (max of window and chunk p)"
        lines.append(f"| {name} | {fold_acc} | {auc} | {t['accuracy']:.3f} | "
                     f"{t['danger_recall']:.3f} | {t['false_alarms']}/"
                     f"{report['class_counts']['safe']} |")
    a = report["agreement"]
    lines += ["", f"Detector vs pipeline: max |Δp| {a['max_abs_diff_detector_vs_pipeline']:.2e}, "
                  f"decision disagreements {a['decision_disagreements_at_threshold']}"]
    if "daemon_event_vs_detector_threshold_disagreements" in a:
        lines[-1] += (f"; daemon events vs Detector p ≥ t disagreements "
                      f"{a['daemon_event_vs_detector_threshold_disagreements']}")
    lines[-1] += "."
    thr = ", ".join(f"{f['fold']}: {f['threshold']:.3f}" for f in report["per_fold"])
    lines += ["", f"Per-fold thresholds (inner CV on training folds): {thr}.", ""]
    return "\n".join(lines)
