"""``edge-train build`` for a mapping with named danger classes (the default mapping).

ESC-50 clips + ``--extra`` folders + synthetic negatives + mixes → device-path embeddings →
class plan (trained / zero-shot evidence) → leave-one-ESC-fold-out CV of danger vs safe →
the multi-class classifier fitted on everything → ``classifier.onnx`` (embedding and the
head's audioset_probs → class_scores) → manifest ``classes`` section with per-class thresholds
and a level gate.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.classes import DECISION_THRESHOLD, HEAD_PROBS_INPUT, normalise
from edge_runtime.manifest import ClassifierSpec, ClassSpec, Manifest, load_manifest
from training import classifiers, evaluate
from training.attach import attach_classifier
from training.class_checks import own_recall, report_own_recall, report_unheard, unheard
from training.class_model import (
    CLASS_OUTPUT,
    GATE_PERCENTILE,
    class_model_onnx,
    class_scores,
    features,
    head_gates,
    plan_classes,
)
from training.class_thresholds import (
    MAX_PASSED_SHARE,
    MIN_PASSED_FILES,
    SAFE_FILE_BUDGET,
    ScoredWindows,
    choose_thresholds,
    zero_shot_ceilings,
)
from training.dataset import Clip, header_seconds
from training.embed import embed_clips
from training.household import home_clips
from training.logs import progress
from training.mapping import Mapping
from training.negatives import LEVELS_DBFS as NEGATIVE_LEVELS_DBFS
from training.negatives import RATE as MIX_RATE
from training.negatives import mix_clips, negative_clips
from training.onnx_classifier import run_classifier_onnx
from training.reports import WORKBENCH, save_report
from training.synthetic_alarms import CATEGORY as ALARM_CATEGORY
from training.synthetic_alarms import alarm_clips

log = logging.getLogger(__name__)

# How a window is embedded, per backbone. mn04 processes each 1 s chunk alone with visible
# edge effects (streamed vs whole-clip cosine 0.79); one pass over the 5 s window cut held-out
# UrbanSound8K false alarms from 26 % to 5 % at equal recall, for ~6x the (tiny) backbone cost.
# Cnn14's chunks agree with the whole clip (cosine 0.945) and it costs 15x more: chunked.
WINDOW_EMBEDDING = {"mn04": "whole", "cnn14": "chunked"}
# Class models decide on windows: scoring each 1 s chunk alone doubled held-out false alarms
# (mn04, UrbanSound8K fold 3: 10 % vs 5 %); chunks still place events in time.
CHUNK_DECISIONS = False
# mn04 whole windows: one network pass over 5 s per scored window is about half the hop's
# work (1.9 of 3.9 ms measured); scoring every 2nd chunk halves that part (a decision every
# 2 s; every sound up to 3 s still lies whole inside some window). Every 3rd chunk would cost
# 1.02x a binary mn04 hop instead of 1.27x, but held-out fold-1 danger clips placed in 20 s of
# real ambience (edge-train place) were found with the right class 137 instead of 145 times of
# 221, and a 5 s dog clip in a stream never lies whole in a window. Chunked (Cnn14) windows
# cost nothing extra to score every hop.
WINDOW_STRIDE = {"mn04": 2}
# Loudness gain of whole windows (target dBFS, most dB raised; edge_runtime.loudness): a quiet
# window is heard as if raised toward -20 dBFS, by at most 20 dB, never lowered. Held out,
# daemon path (RESULTS_MN04.md, fifth session of 2026-12-02): fold 1 balanced accuracy 0.910 ->
# 0.931 (gunshot 18 -> 22/35, siren 80 -> 84/86, false alarms 2.5 -> 2.0 %), fold 3 0.957 ->
# 0.951 (one siren of 7). Lowering loud windows too (+-20 dB) cost fold 3 four gunshots.
WINDOW_GAIN = {"mn04": (-20.0, 20.0)}
LOGREG_C = 0.1  # held-out UrbanSound8K fold 3: 0.1 ≥ 1.0 and 0.02 on balanced accuracy
# Level gate: windows quieter than the quietest noise the synthetic negatives teach as safe
# (negatives.LEVELS_DBFS: -70 dBFS) are never danger; above it the classifier decides (it is
# trained on silence and noise at -70...-30 dBFS and tested on -60 and -67 dBFS noise). Learnt
# from the training clips (10 dB under their quietest windows) the gate sat at -51.9 dBFS and
# silenced 11 held-out fold-1 sirens recorded from afar; capped at -60 dBFS it still silenced 3
# of them (-65...-60 dBFS windows, head siren evidence 0.57-0.64) and 9 more fold-1 dog/siren
# clips played 20 dB quieter, with no fewer false alarms: at -70 the held-out false alarms and
# false events on long safe audio were unchanged (RESULTS_MN04.md, fourth session of
# 2026-12-02). With --no-negatives the gate stays there: a fixed floor, not learnt.
LEVEL_GATE_DBFS = float(min(NEGATIVE_LEVELS_DBFS))


def stage(name: str, started: float) -> float:
    now = time.perf_counter()
    log.info("%s: %.1f s", name, now - started)
    return now


def set_streaming(out: Path, backbone: str) -> Manifest:
    """Write the class model's window embedding, loudness gain and decision rule into the
    manifest."""
    manifest = load_manifest(out)
    target, max_db = WINDOW_GAIN.get(backbone, (manifest.streaming.gain_target_dbfs, 0.0))
    manifest = manifest.replace(streaming=manifest.streaming.replace(
        window_embedding=WINDOW_EMBEDDING.get(backbone, "chunked"),
        chunk_decisions=CHUNK_DECISIONS, window_stride=WINDOW_STRIDE.get(backbone, 1),
        gain_target_dbfs=target, gain_max_db=max_db))
    manifest.write(out)
    return manifest


def window_seconds(manifest: Manifest) -> float:
    """Length of one device window (a danger sound in a stream is heard inside this much)."""
    return (manifest.streaming.chunk_samples * manifest.streaming.window_chunks
            / manifest.input.sample_rate)


def durations(clips: dict[str, Clip]) -> dict[str, float]:
    """Seconds of audio per clip name, where the file's header says (others: not capped)."""
    return {name: sec for name, clip in clips.items()
            if (sec := header_seconds(clip.path)) is not None}


def fit_pipeline(kind: str, seed: int, x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Fit one pipeline with per-row weights where the classifier takes them."""
    from sklearn.exceptions import ConvergenceWarning

    pipeline = classifiers.make_pipeline(kind, seed)
    if kind == "logreg":
        pipeline.set_params(clf__C=LOGREG_C)
    fit_params = {} if kind == "mlp" else {"clf__sample_weight": w}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipeline.fit(x, y, **fit_params)


def cv_group(clip: Clip, by_name: dict[str, Clip]) -> str:
    """Recording-disjoint CV group: the ESC-50 fold, an extra folder's fold, one of three
    buckets of an extra folder's fold-less files, synthetic; a mix goes with its source."""
    if clip.group.startswith("mix:"):
        return cv_group(by_name[clip.group[4:]], by_name)
    if clip.group == "esc50":
        return f"esc{clip.fold}"
    if clip.group.endswith(":foldnone"):
        return f"{clip.group}:{int(hashlib.sha256(clip.filename.encode()).hexdigest(), 16) % 3}"
    return clip.group


def cv_groups(clip: Clip, by_name: dict[str, Clip]) -> frozenset[str]:
    """Every CV group a row's audio comes from: its own, and for a mix its background's too
    (a mix trained while its background's group is tested would score that very recording)."""
    groups = {cv_group(clip, by_name)}
    if clip.background is not None:
        groups.add(cv_group(by_name[clip.background], by_name))
    return frozenset(groups)


def group_oof(kind: str, seed: int, x: np.ndarray, y: np.ndarray, w: np.ndarray,
              groups: list[frozenset[str]], real: np.ndarray, head: np.ndarray | None,
              plan) -> np.ndarray:
    """Out-of-group raw class scores ``[rows, K]`` for every real row (NaN for mixes): each
    group is scored by a model trained on the rows with no audio from that group."""
    oof = np.full((len(y), len(plan.names)), np.nan, dtype=np.float32)
    tested = sorted({next(iter(gs)) for gs, r in zip(groups, real, strict=True) if r})
    log.info("out-of-group scores: %d groups, one %s fit each", len(tested), kind)
    for g in progress(tested, "out-of-group scores", "group"):
        touches = np.array([g in gs for gs in groups])
        test = touches & real
        train = ~touches & (y >= 0)
        if not train.any() or len(set(y[train].tolist())) < 2:
            continue
        model = fit_pipeline(kind, seed, x[train], y[train], w[train])
        oof[test] = class_scores(model.predict_proba(x[test]),
                                 None if head is None else head[test], plan, model.classes_)
    return oof


def cv_report(oof: np.ndarray, y: np.ndarray, rows: np.ndarray, thresholds: list[float],
              danger_class: np.ndarray, plan, fold: np.ndarray) -> dict[str, Any]:
    """Danger vs safe on ``rows`` (per window; ESC clips are one window) at the thresholds."""
    norm = normalise(oof[rows], np.asarray(thresholds))
    p, best = norm.max(axis=1), norm.argmax(axis=1)
    yb = (y[rows] != 0).astype(int)
    per_fold = [{"fold": int(f), **evaluate.metrics(yb[fold[rows] == f], p[fold[rows] == f],
                                                    DECISION_THRESHOLD)}
                for f in sorted(set(fold[rows].tolist()))]
    flagged = (p >= DECISION_THRESHOLD) & (yb == 1)
    names = np.array(plan.names)
    right = names[best[flagged]] == danger_class[rows][flagged]
    accs = [f["accuracy"] for f in per_fold]
    return {"per_fold": per_fold, "fold_accuracy_mean": float(np.mean(accs)),
            "fold_accuracy_std": float(np.std(accs)),
            "at_0.5": evaluate.metrics(yb, p, DECISION_THRESHOLD),
            "class_right_of_flagged_danger": float(right.mean()) if right.size else None}


def build_classes(data: str | Path, out: Path, mapping: Mapping, clips: list[Clip], *,
                  backbone_name: str, official: bool, classifier: str = "logreg",
                  extras: tuple[str | Path, ...] = (), hold_out_folds: tuple[str, ...] = (),
                  negatives: bool = True, mixes: int = 1, seed: int = 0,
                  threads: int | None = None, seconds: dict[str, float] | None = None
                  ) -> dict[str, Any]:
    """Train and write the class model into the exported model dir ``out``; ``clips``: the
    data's and the ``extras`` folders' (read by the caller, before anything was written)."""
    import joblib

    from edge_runtime.sessions import load_sessions

    seconds = seconds if seconds is not None else {}
    t = time.perf_counter()
    manifest = set_streaming(out, backbone_name)
    if negatives:
        clips = clips + negative_clips(out / WORKBENCH / "negatives", seed)
        clips = clips + home_clips(out / WORKBENCH / "home")
    clips = clips + alarm_clips(out / WORKBENCH / "alarms", mapping.class_of(ALARM_CATEGORY),
                                seed)
    danger = [c for c in clips if c.label == 1]
    backgrounds = [c for c in clips if c.label == 0]
    clips = clips + mix_clips(danger, backgrounds, out / WORKBENCH / "mixes", mixes, seed,
                              round(window_seconds(manifest) * MIX_RATE))
    t = stage("data", t)

    emb = embed_clips(out, clips, cache_dir=out / WORKBENCH, threads=threads,
                      measure_offline=False)
    seconds["embed"] = round(time.perf_counter() - t, 1)
    t = stage("embeddings", t)

    by_name = {c.filename: c for c in clips}
    danger_class = np.array([by_name[n].danger_class or "" for n in emb.filename])
    group = np.array([by_name[n].group for n in emb.filename])
    real = np.array([not g.startswith("mix:") for g in group])
    counts = Counter(by_name[n].danger_class for n in sorted(set(emb.filename.tolist()))
                     if by_name[n].danger_class and not by_name[n].group.startswith("mix:"))
    plan = plan_classes(mapping, dict(counts), head_is_real=official)
    sessions = load_sessions(out, provider="cpu", threads=threads, with_classifier=False)
    head = None
    if plan.use_head and sessions.head is not None:
        from edge_runtime.sessions import run1

        head = np.concatenate([run1(sessions.head, emb.x[i:i + 4096])
                               for i in range(0, len(emb.x), 4096)])
    if head is not None:
        plan.gates = head_gates(plan, head, danger_class, emb.filename, real)
        log.info("head gates (%g th percentile of training clips): %s", GATE_PERCENTILE,
                 ", ".join(f"{n} {g:.4f}" for n, g in plan.gates.items()) or "-")
    x = features(emb.x, head)
    y = plan.target(danger_class, emb.label)
    per_file = Counter(emb.filename.tolist())
    w = np.array([1.0 / np.sqrt(per_file[n]) for n in emb.filename])  # long files weigh √n
    groups = [cv_groups(by_name[n], by_name) for n in emb.filename]
    oof = group_oof(classifier, seed, x, y, w, groups, real, head, plan)
    rate = SAFE_FILE_BUDGET / len(plan.names)
    windows = ScoredWindows.of(emb.filename, emb.window, sessions.window_chunks,
                               sessions.window_stride,
                               sessions.chunk_samples / sessions.sample_rate,
                               durations({n: by_name[n]
                                          for n in sorted(set(emb.filename.tolist()))}))
    ceilings = zero_shot_ceilings(plan, head, danger_class, windows, real)
    setters: dict[str, tuple[str, float]] = {}
    thresholds = choose_thresholds(plan, oof, y, windows, rate, ceilings, setters)
    log.info("thresholds (out-of-group, ≤ %.2f%% of the safe files that could raise each "
             "class): %s", 100 * rate,
             ", ".join(f"{n} {t:.3f}" for n, t in zip(plan.names, thresholds, strict=True)))
    recalls = own_recall(plan, oof, windows, danger_class, real, thresholds)
    report_own_recall(recalls, dict(zip(plan.names, thresholds, strict=True)), setters)
    cv = cv_report(oof, y, real & (group == "esc50"), thresholds, danger_class, plan, emb.fold)
    log.info("ESC-50 fold CV (danger vs safe, %s): accuracy %.3f ± %.3f, AUC %.4f",
             classifier, cv["fold_accuracy_mean"], cv["fold_accuracy_std"],
             cv["at_0.5"]["roc_auc"])
    seconds["cv"] = round(time.perf_counter() - t, 1)
    t = stage("fold CV", t)

    keep = y >= 0
    final = fit_pipeline(classifier, seed, x[keep], y[keep], w[keep])
    checked = real & (emb.label == 1) & keep  # the final model on its own danger recordings
    scores = np.zeros((len(y), len(plan.names)), np.float32)
    scores[checked] = class_scores(final.predict_proba(x[checked]),
                                   None if head is None else head[checked], plan,
                                   final.classes_)
    folders = np.array([g.split(":", 1)[0] for g in group])
    report_unheard(unheard(plan, scores, head, windows, danger_class, folders, checked,
                           thresholds), plan.gates,
                   dict(zip(plan.names, thresholds, strict=True)))
    joblib.dump(final, out / WORKBENCH / f"pipeline-{classifier}-classes.joblib")
    model = class_model_onnx(final, plan, emb.x.shape[1],
                             None if head is None else head.shape[1])
    gate = {"level_gate_dbfs": LEVEL_GATE_DBFS, "rule": "the quietest synthetic noise negative"}
    spec = ClassSpec(tuple(plan.names), tuple(thresholds), CLASS_OUTPUT, tuple(plan.evidence),
                     gate["level_gate_dbfs"],
                     min_seconds=tuple(plan.persistence(n) for n in plan.names),
                     calibration={"method": "out-of-group safe files",
                                  **({"persisted_classes": "level held for min_seconds in "
                                                           "safe files long enough to hold "
                                                           "it"}
                                     if any(plan.min_seconds.values()) else {}),
                                  "safe_file_budget": SAFE_FILE_BUDGET,
                                  "safe_file_rate_per_class": round(rate, 6),
                                  "min_passed_files": MIN_PASSED_FILES,
                                  "max_passed_share": MAX_PASSED_SHARE,
                                  "head_gates": {n: round(g, 6) for n, g in plan.gates.items()},
                                  "head_gate_percentile": GATE_PERCENTILE,
                                  "zero_shot_ceilings": {n: round(c, 6)
                                                         for n, c in ceilings.items()},
                                  "training_recordings_reaching_threshold": {
                                      r.name: [r.reached, r.recordings] for r in recalls},
                                  "level_gate": gate})
    rows = Counter(int(v) for v in y[keep])
    created = datetime.now(UTC).isoformat(timespec="seconds")
    section = ClassifierSpec(
        kind=classifier, input="embedding" if head is None else f"embedding, {HEAD_PROBS_INPUT}",
        output=CLASS_OUTPUT, threshold=DECISION_THRESHOLD,
        mapping=mapping.as_dict(),
        cv={"scheme": "leave-one-ESC-50-fold-out; extras and negatives always train, a mix "
                      "trains unless its clip's or background's group is tested",
            "fold_accuracy_mean": cv["fold_accuracy_mean"],
            "fold_accuracy_std": cv["fold_accuracy_std"],
            "roc_auc": cv["at_0.5"]["roc_auc"],
            "class_right_of_flagged_danger": cv["class_right_of_flagged_danger"]},
        trained_on={"data": Path(data).name, "extras": [Path(e).name for e in extras],
                    "held_out_folds": list(hold_out_folds),
                    "clips": len(set(emb.filename[real].tolist())),
                    "mixes": len(set(emb.filename[~real].tolist())),
                    "rows_per_class": {("safe" if k == 0 else plan.trained[k - 1]): v
                                       for k, v in sorted(rows.items())},
                    "clips_per_class": dict(counts), "seed": seed},
        extra={"threshold_note": "p(danger) = the largest class score normalised by its class "
                                 "threshold; 0.5 = some class at its threshold"})
    attach_classifier(out, out, model, section, classes=spec)  # no end_to_end for classes
    ref = class_scores(final.predict_proba(x[:256]), None if head is None else head[:256], plan,
                       final.classes_)
    got = run_classifier_onnx(out / "classifier.onnx", emb.x[:256],
                              None if head is None else head[:256])
    parity = {"rows": int(len(ref)), "max_abs_diff": float(np.abs(ref - got).max())}
    log.info("classifier.onnx vs scikit-learn + numpy: max abs diff %.2e", parity["max_abs_diff"])
    seconds["fit_export"] = round(time.perf_counter() - t, 1)
    stage("fit + ONNX", t)
    report = {"created": created, "backbone": backbone_name, "classes": plan.names,
              "evidence": {n: ("trained" if n in plan.trained else "audioset")
                           for n in plan.names},
              "clips_per_class": dict(counts), "level_gate": gate, "cv": {
                  k: v for k, v in cv.items() if k != "oof"}, "parity": parity,
              "seconds": seconds}
    report["markdown"] = class_markdown(report)
    save_report(out, "report", report, report["markdown"])
    return report


def class_markdown(report: dict[str, Any]) -> str:
    cv = report["cv"]
    lines = [f"# edge-detect class model ({report['created']}, {report['backbone']})", "",
             "| class | evidence | training clips |", "|---|---|---|"]
    lines += [f"| {n} | {report['evidence'][n]} | {report['clips_per_class'].get(n, 0)} |"
              for n in report["classes"]]
    at = cv["at_0.5"]
    lines += ["", "Leave-one-ESC-50-fold-out, danger vs safe (real ESC clips only tested): "
              f"accuracy {cv['fold_accuracy_mean']:.3f} ± {cv['fold_accuracy_std']:.3f}, "
              f"balanced {at['balanced_accuracy']:.3f}, danger recall {at['danger_recall']:.3f}, "
              f"false alarms {at['false_alarms']}/{at['confusion'][0][0] + at['confusion'][0][1]}"
              f", AUC {at['roc_auc']:.4f}; class right for "
              f"{(cv['class_right_of_flagged_danger'] or 0):.3f} of flagged danger clips.",
              f"Level gate {report['level_gate']['level_gate_dbfs']} dBFS (the quietest "
              "synthetic noise negative's level).",
              f"classifier.onnx parity: {report['parity']['max_abs_diff']:.2e}.", ""]
    return "\n".join(lines)
