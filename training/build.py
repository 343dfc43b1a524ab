"""``edge-train build``: export → embed → fold-CV → fit → classifier.onnx → end_to_end.onnx.

Writes into the model dir: ``classifier.onnx`` (manifest role ``classifier``, a device file),
``report.json``, ``report.md``, ``confusion_matrix.png``, ``roc_pr.png`` and the updated
``manifest.json`` (plus a top-level ``classifier`` section). Workbench-only files go to
``<model dir>/.workbench/``: the embedding cache, a joblib of the fitted pipeline and
``end_to_end.onnx`` (listed in the manifest's ``workbench`` section, not in ``files``). The device
never loads them; ``edge-train bundle`` packs exactly the device files (``training.bundle``).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.manifest import MANIFEST_NAME, ClassifierSpec, data_name, load_manifest
from training import classifiers, evaluate
from training.attach import attach_classifier
from training.dataset import load_audio, read_dataset
from training.defaults import DEFAULT_KIND, KINDS
from training.embed import Embeddings, cosine_summary, embed_clips
from training.extra import read_extra
from training.mapping import CLASSES, Mapping, load_mapping
from training.onnx_classifier import (
    CLASSIFIER_OUTPUT,
    DANGER_COLUMN,
    run_classifier_onnx,
    to_onnx,
)
from training.reports import WORKBENCH, save_report
from training.staging import staged

log = logging.getLogger(__name__)

def parity(pipeline, onnx_path: Path, x: np.ndarray, threshold: float) -> dict[str, Any]:
    """sklearn predict_proba vs classifier.onnx on every embedding."""
    ref = pipeline.predict_proba(x)[:, 1]
    got = run_classifier_onnx(onnx_path, x)[:, 1]
    return {"rows": int(len(x)), "max_abs_diff": float(np.abs(ref - got).max()),
            "decision_disagreements": int(((ref >= threshold) != (got >= threshold)).sum())}


def end_to_end_check(model_dir: Path, clips, n: int = 2) -> dict[str, Any]:
    """end_to_end.onnx vs the device path (features.embed_audio → classifier) on ``n`` clips."""
    import onnxruntime as ort

    from edge_runtime.features import embed_audio
    from edge_runtime.sessions import load_sessions, run1

    sessions = load_sessions(model_dir, provider="cpu")
    e2e = ort.InferenceSession(str(sessions.manifest.workbench_path(model_dir, "end_to_end")),
                               providers=["CPUExecutionProvider"])
    diffs = []
    for clip in clips[:n]:
        audio = load_audio(clip.path, sessions.sample_rate)[None]
        emb, spans = embed_audio(sessions, audio[0])
        assert len(spans) == 1, "end_to_end check needs clips of at most one window"
        ref = run1(sessions.classifier, emb)[:, 1]
        got = e2e.run(["p_danger"], {"waveform": audio})[0]
        diffs.append(float(np.abs(ref - got).max()))
    return {"clips": len(diffs), "max_abs_diff_vs_device_path": max(diffs)}


def run_cv(emb: Embeddings, seed: int, target_recall: float) -> dict[str, dict[str, Any]]:
    """Leave-one-fold-out report of every classifier kind."""
    if len(np.unique(emb.fold)) < 2:
        raise ValueError("fold CV needs clips from at least two ESC-50 folds")
    results = {}
    for kind in classifiers.KINDS:
        start = time.perf_counter()
        results[kind] = evaluate.evaluate(classifiers.make_pipeline(kind, seed), emb.x,
                                          emb.label, emb.fold, target_recall)
        results[kind]["seconds"] = round(time.perf_counter() - start, 2)
        log.info("CV %s: fold accuracy %.3f ± %.3f (%.1f s)", kind,
                 results[kind]["fold_accuracy_mean"], results[kind]["fold_accuracy_std"],
                 results[kind]["seconds"])
    return results


def write_report(out: Path, report: dict[str, Any], results: dict[str, dict[str, Any]],
                 emb: Embeddings, kind: str) -> str:
    """report.json, report.md and the PNGs; returns the markdown."""
    evaluate.plot_confusions(results, out / "confusion_matrix.png")
    evaluate.plot_roc_pr(results, emb.label, out / "roc_pr.png")
    cos = report["streamed_vs_offline_cosine"]
    md = "\n".join([
        f"# edge-detect model report ({report['created']})",
        "",
        f"Backbone {report['backbone']}, data {report['data']}: {report['clips']} clips "
        f"({report['class_counts']['danger']} danger, {report['class_counts']['safe']} safe), "
        f"leave-one-fold-out over ESC-50 folds {sorted(set(emb.fold.tolist()))}.",
        f"Exported classifier: **{kind}**, threshold {results[kind]['threshold']:.4f} "
        f"(target danger recall ≥ {report['threshold_target']['danger_recall']}).",
        "",
        "## Fold CV (out-of-fold)",
        "",
        evaluate.markdown_table(results, kind),
        "",
        evaluate.fold_table(results),
        "",
        "## Streamed (device, 1 s chunks) vs offline (whole clip) embedding cosine",
        "",
        (f"{cos['clips']} clips: mean {cos['mean']:.4f}, median {cos['median']:.4f}, "
         f"p05 {cos['p05']:.4f}, min {cos['min']:.4f}" if cos.get("clips") else "not measured"),
        "",
        "## ONNX parity",
        "",
        f"classifier.onnx vs sklearn on {report['parity']['rows']} embeddings: max abs diff "
        f"{report['parity']['max_abs_diff']:.2e}, decision disagreements at the threshold "
        f"{report['parity']['decision_disagreements']}; end_to_end.onnx vs the device path "
        "(split ONNX files, 1 s chunks): "
        f"{report['end_to_end']['max_abs_diff_vs_device_path']:.2e}.",
        "",
    ])
    save_report(out, "report", report, md)
    return md


def build(data: str | Path, out: str | Path, weights: str | None = None, *,
          classifier: str = DEFAULT_KIND, mapping: str | Path | Mapping | None = None,
          backbone: str = "auto", target_recall: float = evaluate.DEFAULT_TARGET_RECALL,
          seed: int = 0, per_fold_limit: int | None = None, threads: int | None = None,
          measure_offline: bool = True, extras: tuple[str | Path, ...] = (),
          hold_out_folds: tuple[str, ...] = (), negatives: bool = True,
          mixes: int = 1) -> dict[str, Any]:
    """Run the whole training job; ``weights`` None reuses the export already in ``out``.

    A mapping with danger classes (the default) builds a class model
    (:mod:`training.class_build`); a two-list mapping builds the binary model below. Every
    input is read before anything is written, and the build runs beside ``out``
    (:mod:`training.staging`): a failed build leaves the model dir as it was.
    """
    if classifier not in KINDS:
        raise ValueError(f"unknown classifier {classifier!r}; choose {', '.join(KINDS)}")
    start = time.perf_counter()
    mapping_obj = mapping if isinstance(mapping, Mapping) else load_mapping(mapping)
    clips = read_dataset(data, mapping_obj, per_fold_limit)
    if extras and not mapping_obj.classes:
        raise ValueError("--extra needs a mapping with danger classes (see "
                         "training/default_mapping.toml)")
    for folder in extras:  # a bad folder is found now, not after the export
        clips = clips + read_extra(folder, mapping_obj, hold_out_folds)
    if weights is None and not (Path(out) / MANIFEST_NAME).is_file():
        raise ValueError(f"{out}: no exported model to reuse; give --weights")
    with staged(out) as stage:
        return _build(data, stage, weights, clips, mapping_obj, start, classifier=classifier,
                      backbone=backbone, target_recall=target_recall, seed=seed,
                      per_fold_limit=per_fold_limit, threads=threads,
                      measure_offline=measure_offline, extras=extras,
                      hold_out_folds=hold_out_folds, negatives=negatives, mixes=mixes)


def _build(data: str | Path, out: Path, weights: str | None, clips: list[Any],
           mapping_obj: Mapping, start: float, *, classifier: str, backbone: str,
           target_recall: float, seed: int, per_fold_limit: int | None, threads: int | None,
           measure_offline: bool, extras: tuple[str | Path, ...],
           hold_out_folds: tuple[str, ...], negatives: bool, mixes: int) -> dict[str, Any]:
    """:func:`build` in the staging folder ``out``, its inputs already read."""
    import joblib

    seconds: dict[str, float] = {}
    if weights is not None:
        from export.pipeline import export_from_checkpoint

        export_from_checkpoint(weights, out, backbone=backbone)
        seconds["export"] = round(time.perf_counter() - start, 1)
        log.info("stage export: done in %.1f s", seconds["export"])
    manifest = load_manifest(out)
    if mapping_obj.classes:
        from training.class_build import build_classes

        report = build_classes(data, out, mapping_obj, clips,
                               backbone_name=manifest.backbone.name,
                               official=bool(manifest.backbone.checkpoint.get("official")),
                               classifier=classifier, extras=extras,
                               hold_out_folds=hold_out_folds, negatives=negatives, mixes=mixes,
                               seed=seed, threads=threads, seconds=seconds)
        seconds["total"] = round(time.perf_counter() - start, 1)
        return report

    t = time.perf_counter()
    emb = embed_clips(out, clips, cache_dir=out / WORKBENCH, threads=threads,
                      measure_offline=measure_offline)
    seconds["embed"] = round(time.perf_counter() - t, 1)
    log.info("stage embedding: done in %.1f s", seconds["embed"])

    t = time.perf_counter()
    results = run_cv(emb, seed, target_recall)
    seconds["cv"] = round(time.perf_counter() - t, 1)
    log.info("stage fold CV: done in %.1f s", seconds["cv"])

    res = results[classifier]
    threshold = res["threshold"]
    cv_summary = {
        "scheme": "leave-one-fold-out over ESC-50 folds",
        "folds": sorted(set(emb.fold.tolist())),
        "fold_accuracy_mean": res["fold_accuracy_mean"],
        "fold_accuracy_std": res["fold_accuracy_std"],
        "roc_auc": res["at_0.5"]["roc_auc"],
        "at_threshold": {k: res["at_threshold"][k] for k in
                         ("accuracy", "balanced_accuracy", "danger_recall", "danger_precision",
                          "false_alarms", "confusion")},
    }
    counts = {"danger": int((emb.label == 1).sum()), "safe": int((emb.label == 0).sum())}
    created = datetime.now(UTC).isoformat(timespec="seconds")
    section = ClassifierSpec(
        kind=classifier, threshold=float(threshold), input="embedding",
        output=CLASSIFIER_OUTPUT, danger_column=DANGER_COLUMN, classes=tuple(CLASSES),
        threshold_target=res["threshold_target"], mapping=mapping_obj.as_dict(), cv=cv_summary,
        trained_on={"data": data_name(Path(data).resolve()),
                    "clips": int(len(set(emb.filename))), "rows": len(emb),
                    "class_counts": counts, "seed": seed, "per_fold_limit": per_fold_limit,
                    "embedding_model_id": emb.model_id})

    t = time.perf_counter()
    final = classifiers.make_pipeline(classifier, seed).fit(emb.x, emb.label)
    joblib.dump(final, out / WORKBENCH / f"pipeline-{classifier}.joblib")
    attach_classifier(out, out, to_onnx(final, emb.x.shape[1]), section, end_to_end=True)
    par = parity(final, out / "classifier.onnx", emb.x, threshold)
    log.info("classifier.onnx parity: %s", par)
    seconds["fit_export"] = round(time.perf_counter() - t, 1)
    log.info("stage fit + classifier/end-to-end ONNX: done in %.1f s", seconds["fit_export"])
    e2e = end_to_end_check(out, clips)
    seconds["total"] = round(time.perf_counter() - start, 1)
    log.info("stage build: done in %.1f s", seconds["total"])
    report = {
        "created": created,
        "backbone": manifest.backbone.name,
        "data": str(data),
        "clips": int(len(set(emb.filename))),
        "class_counts": counts,
        "mapping": mapping_obj.as_dict(),
        "chosen": classifier,
        "threshold_target": res["threshold_target"],
        "results": {k: {**v, "oof_probability": None} for k, v in results.items()},
        "out_of_fold": {"filename": emb.filename, "fold": emb.fold, "label": emb.label,
                        **{k: v["oof_probability"] for k, v in results.items()}},
        "streamed_vs_offline_cosine": cosine_summary(emb),
        "parity": par,
        "end_to_end": e2e,
        "seconds": seconds,
    }
    for v in report["results"].values():
        v.pop("oof_probability")
    report["markdown"] = write_report(out, report, results, emb, classifier)
    return report
