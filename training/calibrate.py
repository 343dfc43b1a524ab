"""``edge-train calibrate``: thresholds from a false-alarm budget on real safe recordings.

1. Every safe recording (``--ambience``: all audio files of a folder, or the safe rows of a
   labelled folder) is replayed once through the daemon's own loop (:mod:`training.replay`:
   ``Runner``, the Detector's windows and chunk decisions, ``EventTracker`` with the
   ``edge-detect`` defaults), keeping each window's ``decision`` and, for a class model, its
   raw ``class_scores``.
2. Event rules are re-simulated on those cached windows for candidate thresholds (no ONNX per
   candidate). Candidates are the observed score quantiles and the values just above the highest
   scores, never below the threshold before calibration (a quiet recording never makes a
   model more sensitive) unless ``--min-threshold`` lets a class come down to it (a class
   already below it is not raised by it), nor above ``1 - 1e-6``.

   * binary model (``classifier.threshold``): the smallest threshold at which every higher
     candidate keeps false events per hour ≤ budget;
   * class model (``classes.thresholds``, raw ``class_scores`` scale): each class on its own
     gets budget / K; then the combined decision (max over classes of the normalised score
     after each class's ``min_seconds`` persistence, as the runtime decides) is simulated
     and, while it exceeds the budget, the class with the most events is raised to its next
     candidate.

   Before any search the simulation at the current thresholds must give exactly the daemon's
   event count on every file; otherwise the command stops (the cache would not be the path).
3. Held-out danger clips (``--danger DIR --fold N``) replayed the same way give the recall
   before and after.
4. The thresholds and a ``calibration`` record are written into the manifest (atomically, all
   other content kept), then the ambience and danger clips are replayed again through the
   updated model dir: the false events per hour and recall recorded are measured, not simulated.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.classes import DECISION_THRESHOLD, normalise
from edge_runtime.manifest import ClassifierSpec, Manifest, load_manifest
from edge_runtime.persistence import DIP_FLOOR, held_windows, hold
from training.labelled import LabelledClip, read_labelled, read_safe_audio
from training.openworld_eval import overlap_warning
from training.replay import FileRun, cli_event_config, count_events, open_detector, replay
from training.reports import WORKBENCH, clean_json, fmt, save_report

log = logging.getLogger(__name__)

STEM = "calibration"
CEILING = 0.999999
QUANTILES = 101
TOP_SCORES = 200


def just_above(values: np.ndarray) -> np.ndarray:
    """The smallest 6-decimal thresholds strictly above ``values`` (with a margin that keeps
    a score below its threshold after the runtime's float32 rounding; 6 decimals survive a
    manifest written with rounded thresholds)."""
    return np.ceil((np.asarray(values, np.float64) + 2e-7) * 1e6) / 1e6


def poisson_upper(events: int, hours: float, confidence: float = 0.95) -> float | None:
    """Upper ``confidence`` bound on an event rate (per hour) after ``events`` in ``hours``."""
    if hours <= 0:
        return None

    def cdf(lam: float) -> float:
        return sum(math.exp(-lam + i * math.log(lam) - math.lgamma(i + 1))
                   for i in range(events + 1)) if lam > 0 else 1.0

    lo, hi = 0.0, events + 10.0 * math.sqrt(events + 1) + 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - confidence else (lo, mid)
    return hi / hours


@dataclass
class Replayed:
    """One replayed file: its run, the per-window values thresholds apply to ([n, K]) and
    the windows the runtime gated (decision 0 whatever the scores)."""

    run: FileRun
    values: np.ndarray
    gated: np.ndarray

    @property
    def peak(self) -> np.ndarray:
        """Highest value per column over the windows that can decide (-inf: none)."""
        if not hasattr(self, "_peak"):
            live = self.values[~self.gated]
            self._peak = live.max(axis=0) if live.size else np.full(self.values.shape[1],
                                                                    -np.inf)
        return self._peak


class Rule:
    """How thresholds turn a file's cached windows into events (binary or class model)."""

    def __init__(self, manifest: Manifest, event_threshold: float) -> None:
        classes = manifest.classes
        self.is_class = classes is not None
        if classes is not None:
            self.names = list(classes.names)
            self.before = np.asarray(classes.thresholds, np.float64)
            self.min_seconds = np.asarray(classes.min_seconds, np.float64)
            if self.before.shape != (len(self.names),):
                raise ValueError(f"manifest classes: {len(self.names)} names but "
                                 f"{self.before.size} thresholds")
        else:
            self.names = ["danger"]
            self.before = np.array([event_threshold], np.float64)
        self.event_threshold = event_threshold

    def prepare(self, run: FileRun) -> Replayed:
        trace = run.trace
        if not self.is_class:
            return Replayed(run, trace.decision[:, None], np.zeros(trace.decision.size, bool))
        if trace.class_scores is None:
            if trace.decision.size == 0:
                empty = np.zeros((0, len(self.names)))
                return Replayed(run, empty, np.zeros(0, bool))
            raise ValueError(f"{run.clip.path}: the manifest names classes but the runtime gave "
                             "no class_scores for its windows")
        values = trace.class_scores.astype(np.float64)
        if values.shape[1] != len(self.names):
            raise ValueError(f"{run.clip.path}: class_scores have {values.shape[1]} columns, "
                             f"the manifest {len(self.names)} classes")
        now = normalise(values, self.before).max(axis=1)
        return Replayed(run, values, (trace.decision <= 1e-12) & (now > 1e-6))

    def decisions(self, r: Replayed, t: np.ndarray, only: int | None = None) -> np.ndarray:
        """Window decisions at thresholds ``t`` (``only``: that class alone)."""
        if not self.is_class:
            return r.values[:, 0]
        cols = slice(None) if only is None else slice(only, only + 1)
        if not r.values.size:
            return np.zeros(r.values.shape[0])
        # the runtime's arithmetic: float64 normalisation, the stream's persistence (gated
        # windows are below every threshold), decision rounded to float32
        norm = normalise(r.values[:, cols], t[cols])
        above = (norm >= DECISION_THRESHOLD) & ~r.gated[:, None]
        near = (norm >= DIP_FLOOR) & ~r.gated[:, None]
        norm = hold(norm, held_windows(above, r.run.trace.end, self.min_seconds[cols], near))
        d = norm.max(axis=1).astype(np.float32).astype(np.float64)
        d[r.gated] = 0.0
        return d

    def events(self, files: list[Replayed], t: np.ndarray, hop_s: float,
               only: int | None = None) -> list[int]:
        """Events per file at thresholds ``t``."""
        config = cli_event_config(self.event_threshold if self.is_class else float(t[0]))
        cols = slice(None) if only is None else slice(only, only + 1)
        # a file whose scores all stay clearly below their thresholds has no event (for class
        # models: the normalised decision stays below 0.5 ≤ the event threshold)
        quiet_below = t[cols] - 1e-6 if (not self.is_class or self.event_threshold >= 0.5) \
            else np.full(t[cols].shape, -np.inf)
        return [0 if np.all(r.peak[cols] < quiet_below) else
                count_events(r.run.trace, self.decisions(r, t, only), config, hop_s)
                for r in files]


def candidates(values: np.ndarray, floor: float) -> np.ndarray:
    """Ascending thresholds to try: ``floor``, score quantiles above it, and just above the
    highest scores (the values where an event count can change), capped at ``CEILING``."""
    v = values[np.isfinite(values) & (values >= floor)]
    parts = [np.array([floor, CEILING])]
    if v.size:
        q = np.quantile(v, np.linspace(0, 1, QUANTILES))
        parts += [just_above(q), just_above(np.sort(v)[-TOP_SCORES:])]
    c = np.unique(np.concatenate(parts))
    return c[(c >= floor) & (c <= CEILING)]


def search(count, cands: np.ndarray, allowed: float) -> tuple[float, int, bool]:
    """Smallest candidate from which every higher one gives ``count(t) <= allowed``.

    Scans down from the top; returns (threshold, its events, budget met).
    """
    best = None
    for t in cands[::-1]:
        n = count(float(t))
        if n > allowed:
            break
        best = (float(t), n)
    if best is None:
        top = float(cands[-1])
        return top, count(top), False
    return best[0], best[1], True


def pick_thresholds(rule: Rule, files: list[Replayed], hours: float, budget: float,
                    floor: np.ndarray, hop_s: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Per-class thresholds within ``budget`` false events per hour on ``files``."""
    k = len(rule.names)
    t = np.maximum(rule.before.copy(), floor)
    per_class, grids = [], []
    for i in range(k):
        values = np.concatenate([r.values[:, i] for r in files]) if files else np.zeros(0)
        grid = candidates(values, float(floor[i]))
        grids.append(grid)

        def count(x: float, i: int = i) -> int:
            trial = t.copy()
            trial[i] = x
            return sum(rule.events(files, trial, hop_s, only=i if rule.is_class else None))

        t[i], n, met = search(count, grid, budget / k * hours)
        per_class.append({"name": rule.names[i], "before": float(rule.before[i]),
                          "after": float(t[i]), "own_events": n, "own_budget_met": met})
    for _ in range(sum(len(g) for g in grids)):  # combined check; bounded by the candidates
        if sum(rule.events(files, t, hop_s)) <= budget * hours or not rule.is_class:
            break
        own = [sum(rule.events(files, t, hop_s, only=i)) for i in range(k)]
        order = np.argsort(own)[::-1] if max(own) else np.argsort(t)  # else lowest first
        for i in order:
            higher = grids[i][grids[i] > t[i]]
            if higher.size:
                t[i] = higher[0]
                per_class[i]["after"] = float(t[i])
                break
        else:
            break
    return t, per_class


def _recall(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _per_category(clips: list[LabelledClip], before: list[bool], after: list[bool]
                  ) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for c, b, a in zip(clips, before, after, strict=True):
        row = rows.setdefault(c.category, {"category": c.category, "clips": 0, "before": 0,
                                           "after": 0})
        row["clips"] += 1
        row["before"] += int(b)
        row["after"] += int(a)
    return [{**r, "recall_before": r["before"] / r["clips"],
             "recall_after": r["after"] / r["clips"]}
            for r in sorted(rows.values(), key=lambda r: r["category"])]


def write_thresholds(model_dir: Path, rule: Rule, t: np.ndarray,
                     record: dict[str, Any]) -> None:
    """Thresholds and ``calibration`` into the manifest (atomic; everything else kept)."""
    manifest = load_manifest(model_dir)
    if rule.is_class and manifest.classes is not None:
        earlier = manifest.classes.calibration
    else:
        earlier = manifest.classifier.extra.get("calibration") if manifest.classifier else None
    if isinstance(earlier, dict) and earlier:  # keep what the build recorded about its own
        kept = earlier.get("from_build") if "budget_per_hour" in earlier else earlier
        if kept is not None:
            record = {**record, "from_build": kept}
    record = clean_json(record)
    if rule.is_class and manifest.classes is not None:
        manifest = manifest.replace(classes=manifest.classes.with_thresholds(
            [float(x) for x in t]).replace(calibration=record))
    else:
        clf = manifest.classifier or ClassifierSpec(kind="")
        manifest = manifest.replace(classifier=clf.replace(
            threshold=float(t[0]), extra={**clf.extra, "calibration": record}))
    manifest.write(model_dir)


def lowest_thresholds(rule: Rule, min_threshold: float | None,
                      lower: tuple[str, ...]) -> np.ndarray:
    """How low each threshold may go: where it is, or ``min_threshold`` for the ``lower``
    classes (empty: every class) — never raised by it. A short ambience cannot vouch for
    lowering every class: a newcomer's 20 min let gunshot down to 0.5 (false gunshots)."""
    unknown = sorted(set(lower) - set(rule.names))
    if unknown:
        raise ValueError(f"--lower {', '.join(unknown)}: not a class of this model (its "
                         f"classes: {', '.join(rule.names)})")
    if min_threshold is None:
        if lower:
            raise ValueError("--lower needs --min-threshold")
        return rule.before.copy()
    down = np.array([not lower or n in lower for n in rule.names])
    return np.where(down, np.minimum(rule.before, min_threshold), rule.before)


def calibrate(model_dir: str | Path, ambience: list[str | Path], *, budget_per_hour: float = 0.5,
              danger: str | Path | None = None, fold: int | None = None,
              min_threshold: float | None = None, lower: tuple[str, ...] = (),
              threads: int | None = None, write: bool = True,
              out: str | Path | None = None) -> dict[str, Any]:
    """Calibrate the model dir's thresholds on ``ambience``; returns (and saves) the report.
    ``lower``: the classes ``min_threshold`` applies to (empty: every class)."""
    start = time.perf_counter()
    if budget_per_hour < 0:
        raise ValueError(f"--budget-per-hour must be ≥ 0 (got {budget_per_hour})")
    if min_threshold is not None and not 0.0 < min_threshold < 1.0:
        raise ValueError(f"--min-threshold must be in (0, 1) (got {min_threshold})")
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    out = Path(out) if out is not None else model_dir / WORKBENCH / "calibrate"
    warnings = []
    amb_clips: list[LabelledClip] = []
    for folder in map(Path, ambience):
        found = read_safe_audio(folder)
        amb_clips += found
        overlap = overlap_warning(manifest, found, f"ambience {folder}")
        if overlap:  # calibrating on training audio promises too little false alarms
            warnings.append(overlap)
            log.warning("%s", overlap)
    danger_clips, overlap = [], None
    if danger is not None:
        danger_clips = [c for c in read_labelled(danger, fold) if c.label == "danger"]
        if not danger_clips:
            raise ValueError(f"{danger}: no danger clips" +
                             (f" in fold {fold}" if fold is not None else ""))
        overlap = overlap_warning(manifest, danger_clips, f"danger {danger}" +
                                  (f" fold {fold}" if fold is not None else ""))
        if overlap:
            warnings.append(overlap)
            log.warning("%s", overlap)

    detector = open_detector(model_dir, threads)
    rule = Rule(manifest, detector.threshold)
    floor = lowest_thresholds(rule, min_threshold, lower)  # refused before any replay
    hop = detector.stride_s  # the tracker steps once per scored window
    amb_runs = [r for r in replay(detector, amb_clips, record=True, desc="ambience")
                if r.error is None]
    if not amb_runs:
        raise ValueError("no readable ambience audio")
    amb = [rule.prepare(r) for r in amb_runs]
    seconds = sum(r.seconds for r in amb_runs)
    hours = seconds / 3600
    daemon_before = [len(r.events) for r in amb_runs]
    simulated = rule.events(amb, rule.before, hop)
    mismatched = [r.clip.name for r, a, b in zip(amb_runs, daemon_before, simulated, strict=True)
                  if a != b]
    if mismatched:
        raise ValueError(f"re-simulated events differ from the daemon's on {len(mismatched)} "
                         f"file(s) (e.g. {mismatched[0]}): the cached window scores do not "
                         "reproduce the runtime's decision (a class model that also decides on "
                         "chunks?); refusing to calibrate")
    after, per_class = pick_thresholds(rule, amb, hours, budget_per_hour, floor, hop)
    sim_after = sum(rule.events(amb, after, hop))

    dng = []
    if danger_clips:
        dng = [rule.prepare(r) for r in replay(detector, danger_clips, record=True, desc="danger")
               if r.error is None]
    danger_before = [r.run.flagged for r in dng]
    danger_sim_after = [n > 0 for n in rule.events(dng, after, hop)]

    record: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "budget_per_hour": budget_per_hour,
        "ambience": [Path(a).resolve().name for a in ambience],
        "ambience_files": len(amb_runs), "ambience_seconds": round(seconds, 1),
        "event_rules": {"event_threshold": None if not rule.is_class else rule.event_threshold,
                        **{k: v for k, v in vars(cli_event_config(0.5)).items()
                           if k not in ("threshold", "off_threshold")},
                        "chunk_decisions": detector.chunk_decisions},
        "min_threshold": None if min_threshold is None else float(min_threshold),
        "lowered_classes": list(lower) or None,
        "thresholds_before": dict(zip(rule.names, map(float, rule.before), strict=True)),
        "thresholds_after": dict(zip(rule.names, map(float, after), strict=True)),
        "false_events_before": sum(daemon_before),
        "false_events_per_hour_before": sum(daemon_before) / hours,
        "false_events_simulated_after": sim_after,
    }
    verified_amb, verified_danger = None, None
    if write:
        write_thresholds(model_dir, rule, after, {**record, "status": "verifying"})
        check = open_detector(model_dir, threads)
        verified_amb = replay(check, amb_clips, desc="verify ambience")
        if danger_clips:
            verified_danger = replay(check, danger_clips, desc="verify danger")
    if verified_amb is not None:
        events_after = sum(len(r.events) for r in verified_amb if r.error is None)
        measured_by = "daemon replay of the calibrated model dir"
    else:
        events_after, measured_by = sim_after, "simulation (not written: dry run)"
    danger_after = ([r.flagged for r in verified_danger if r.error is None]
                    if verified_danger is not None else danger_sim_after)
    record.update({
        "false_events_after": events_after,
        "false_events_per_hour_after": events_after / hours,
        "false_events_per_hour_after_upper95": poisson_upper(events_after, hours),
        "budget_met": events_after <= budget_per_hour * hours,
        "measured_by": measured_by,
        "per_class": per_class,
    })
    if danger_clips:
        record["danger"] = {
            "data": str(danger), "fold": fold, "clips": len(dng), "held_out": overlap is None,
            "recall_before": _recall(danger_before), "recall_after": _recall(danger_after),
            "per_category": _per_category([r.run.clip for r in dng], danger_before,
                                          danger_after)}
    record["status"] = "written" if write else "dry run"
    model_id = {"before": manifest.model_id()}
    if write:
        write_thresholds(model_dir, rule, after, record)
        model_id["after"] = load_manifest(model_dir).model_id()
    if events_after != sim_after or danger_after != danger_sim_after:
        log.error("the calibrated model dir's replay differs from the simulation (ambience "
                  "events %d vs %d, danger clips flagged %d vs %d)", events_after, sim_after,
                  sum(danger_after), sum(danger_sim_after))
    report = {**record, "model_dir": str(model_dir.resolve()), "model_id": model_id,
              "warnings": warnings,
              "class_model": rule.is_class, "seconds": round(time.perf_counter() - start, 1),
              "per_file": [{"file": r.run.clip.name, "seconds": round(r.run.seconds, 1),
                            "events_before": b,
                            "events_after_simulated": a}
                           for r, b, a in zip(amb, daemon_before,
                                              rule.events(amb, after, hop), strict=True)]}
    report["markdown"] = markdown(report)
    out.mkdir(parents=True, exist_ok=True)
    save_report(out, STEM, report, report["markdown"])
    report["out"] = str(out)
    return report


def markdown(report: dict[str, Any]) -> str:
    """Thresholds before/after, false events per hour, and what recall that costs."""
    hours = report["ambience_seconds"] / 3600
    kind = "class" if report["class_model"] else "binary"
    lines = [f"Calibration ({kind} model) on {report['ambience_files']} safe file(s), "
             f"{report['ambience_seconds'] / 60:.1f} min; budget {report['budget_per_hour']} "
             f"false events/hour; {report['status']}.", ""]
    lines += [f"**Warning:** {w}\n" for w in report["warnings"]]
    lines += ["| class | threshold before | after | events alone (after) |", "|---|---|---|---|"]
    for row in report["per_class"]:
        lines.append(f"| {row['name']} | {row['before']:.4f} | {row['after']:.4f} | "
                     f"{row['own_events']}{'' if row['own_budget_met'] else ' (over budget)'} |")
    upper = report["false_events_per_hour_after_upper95"]
    lines += ["", "| | false events | per hour | danger recall |", "|---|---|---|---|",
              f"| before | {report['false_events_before']} | "
              f"{report['false_events_per_hour_before']:.2f} | "
              f"{fmt((report.get('danger') or {}).get('recall_before'))} |",
              f"| after | {report['false_events_after']} | "
              f"{report['false_events_per_hour_after']:.2f} (95 % upper bound "
              f"{fmt(upper, 2)}) | {fmt((report.get('danger') or {}).get('recall_after'))} |",
              "", f"After: {report['measured_by']}. Budget "
                  f"{'met' if report['budget_met'] else 'NOT met'} on this ambience "
                  f"({hours:.2f} h; a rate of {report['budget_per_hour']}/h is shown at 95 % "
                  f"confidence only by ≥ {3 / report['budget_per_hour']:.1f} h without an event)."
              if report["budget_per_hour"] > 0 else ""]
    ids = report.get("model_id") or {}
    if "after" in ids:  # the manifest changed: so did the id a deployment may pin
        lines += ["", f"Model id {ids['before']} → **{ids['after']}** (the new id to give "
                      "`edge-detect --expect-model`)."]
    d = report.get("danger")
    if d:
        where = f", fold {d['fold']}" if d["fold"] is not None else ""
        what = ("Held-out danger clips" if d.get("held_out", True)
                else "Danger clips (NOT held out: the model trained on them)")
        lines += ["", f"{what}: {d['data']}{where}, {d['clips']} clips.", "",
                  "| category | clips | recall before | after |", "|---|---|---|---|"]
        lines += [f"| {r['category']} | {r['clips']} | {r['recall_before']:.3f} | "
                  f"{r['recall_after']:.3f} |" for r in d["per_category"]]
    return "\n".join(lines) + "\n"
