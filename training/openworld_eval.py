"""``edge-train evaluate``: open-world evaluation through the daemon's own path.

Every file of the labelled folders is replayed through ``edge_runtime.daemon.Runner`` exactly as
``edge-detect --input DIR --once --events`` runs it (:mod:`training.replay`); a file counts as
flagged when an event names it. Reported:

* per category: clips, flagged, rate (recall for danger, false-alarm rate for safe; ambiguous
  clips are scored and shown but never counted as right or wrong);
* danger recall, safe false-alarm rate, balanced accuracy (their mean of recall and 1 - false
  alarms);
* for a model with named classes: the confusion of true category vs the ``class`` of the
  file's strongest event, and how often that class is the expected one;
* false events per hour on long safe files (≥ 30 s), and overall as events per safe audio hour.

The manifest's ``trained_on`` is copied into the report next to the folders and fold evaluated;
when they overlap the command says so in one warning line — such numbers are not held-out.
Writes ``openworld_eval.json``, ``.md`` and ``.png`` (each atomically) into ``--out``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.manifest import Manifest, load_manifest
from training.evaluate import save_figure
from training.labelled import LabelledClip, layout, parse_fold, read_labelled
from training.replay import FileRun, cli_event_config, open_detector, replay
from training.reports import WORKBENCH, fmt, save_report

log = logging.getLogger(__name__)

STEM = "openworld_eval"
LONG_S = 30.0  # files at least this long count for false events per hour
NO_EVENT = "(none)"


# --- what the model trained on --------------------------------------------------------------

def _fold_names(folds: Any) -> list[str]:
    """Folds as strings (``3``; ``none`` = the rows without a fold)."""
    if folds is None or isinstance(folds, str | int):
        folds = [] if folds is None else [folds]
    return [str(int(f)) if isinstance(f, int | float) or str(f).isdigit() else str(f)
            for f in folds]


def _sources(value: Any) -> list[dict[str, Any]]:
    """Training sources named in a ``trained_on`` value: ``{"path", "folds", "held_out"}``.

    ``folds``: the only folds trained on (None: all); ``held_out``: folds left out. A record
    with ``extras`` holds its ``held_out_folds`` out of the extras (``edge-train build
    --extra``); ``held_out_fold`` (a stream-eval fold model) is its own data's fold.
    """
    if isinstance(value, str | Path):
        return [{"path": str(value), "folds": None, "held_out": []}]
    if isinstance(value, list):
        return [s for v in value for s in _sources(v)]
    if not isinstance(value, dict):
        return []
    path = next((value[k] for k in ("data", "path", "dir") if isinstance(value.get(k), str)),
                None)
    extras = [s for key in ("extra", "extras", "sources") for s in _sources(value.get(key))]
    held = _fold_names(value.get("held_out_folds") or value.get("excluded_folds"))
    own = _fold_names(value.get("held_out_fold")) + ([] if extras else held)
    folds = value.get("folds")
    out = []
    if path is not None:
        out.append({"path": path, "folds": None if folds is None else _fold_names(folds),
                    "held_out": own})
    for s in extras:
        if s["folds"] is None and not s["held_out"]:
            s["held_out"] = held
        out.append(s)
    return out


def _same_folder(recorded: str, data: Path) -> bool:
    """A recorded training folder is ``data``: same resolved path, or, when only a folder
    name was recorded, the same name."""
    rec = Path(recorded)
    try:
        return rec.resolve() == data.resolve() if rec.is_absolute() else rec.name == \
            data.resolve().name
    except (OSError, ValueError):
        return False


def trained_on(manifest: Manifest) -> dict[str, Any]:
    """The ``trained_on`` records of the manifest's classifier and classes sections."""
    found = {}
    if manifest.classifier is not None and manifest.classifier.trained_on is not None:
        found.update(classifier=manifest.classifier.trained_on)
    if manifest.classes is not None and manifest.classes.calibration.get("trained_on"):
        found["classes"] = manifest.classes.calibration["trained_on"]
    return found


def trained_text(info: dict[str, Any]) -> str:
    """One line: each section's training sources with their folds and clip count."""
    parts = []
    for section, value in info.items():
        srcs = [f"{src['path']} (" + (f"folds {src['folds']}" if src["folds"] is not None else
                                      f"without fold{'s' * (len(src['held_out']) > 1)} "
                                      f"{', '.join(map(str, src['held_out']))}"
                                      if src["held_out"]
                                      else "all folds") + ")"
                for src in _sources(value)]
        clips = value.get("clips") if isinstance(value, dict) else None
        parts.append(f"{section}: " + (", ".join(srcs) or "sources not named")
                     + (f", {clips} clips" if clips is not None else ""))
    return "; ".join(parts) or "not recorded"


def training_overlap(manifest: Manifest, data: Path,
                     fold: int | str | None) -> str | None:
    """Why evaluating ``data`` (``fold``; None: every fold, ``"none"``: the rows without a
    fold) is not held-out for this model, or None."""
    for source in _sources(list(trained_on(manifest).values())):
        if not _same_folder(source["path"], Path(data)):
            continue
        if fold is not None and str(fold) in source["held_out"]:
            continue
        if fold is not None and source["folds"] is not None and str(fold) not in source["folds"]:
            continue
        where = "all folds" if fold is None else f"fold {fold}"
        return (f"the manifest says this model trained on {source['path']} and {where} of "
                f"{data} is evaluated: these numbers are not held-out")
    return None


def trained_clips(manifest: Manifest, clips: list[LabelledClip]) -> list[LabelledClip]:
    """The clips the model trained on, per the manifest: the clip's folder, or the folder its
    file really lives in (links followed), is a training source and its fold was not held out."""
    if not trained_on(manifest):
        return []
    out = []
    for clip in clips:
        real = clip.path.resolve()
        fold = "none" if clip.fold is None else clip.fold
        if any(training_overlap(manifest, folder, fold)
               for folder in dict.fromkeys((clip.data, real.parent, real.parent.parent))):
            out.append(clip)
    return out


def overlap_warning(manifest: Manifest, clips: list[LabelledClip],
                    what: str) -> str | None:
    """One line when some of ``clips`` were training clips, else None."""
    seen = trained_clips(manifest, clips)
    if not seen:
        return None
    return (f"{what}: {len(seen)} of {len(clips)} files (e.g. {seen[0].path}) lie in folders "
            f"and folds this model trained on per its manifest "
            f"({trained_text(trained_on(manifest))}): numbers on them are not held-out")


# --- expected class of a category -----------------------------------------------------------

def expected_classes(categories: list[str], manifest: Manifest) -> dict[str, str]:
    """Category → the class it should be reported as: the class whose training ``categories``
    list it, from the model's own mapping (manifest ``classifier.mapping.classes``), else the
    packaged default mapping; only classes the model has; categories of no class left out."""
    names = set(manifest.classes.names if manifest.classes else ())
    mapping = manifest.classifier.mapping if manifest.classifier else None
    table = (mapping or {}).get("classes")
    if not isinstance(table, dict):
        from training.mapping import default_mapping

        table = {c.name: {"categories": list(c.categories)} for c in default_mapping().classes}
    out = {}
    for name, spec in table.items():
        for category in (spec or {}).get("categories", []):
            if category in categories and name in names:
                out.setdefault(category, name)
    return out


# --- the evaluation -------------------------------------------------------------------------

def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def file_row(run: FileRun) -> dict[str, Any]:
    """One file's line in the report: its truth, events, and the strongest event's class."""
    classes = [e.get("class") for e in run.events]
    top = max(run.events, key=lambda e: e.get("peak_probability", 0.0)) if run.events else None
    return {"file": run.clip.name, "data": str(run.clip.data), "category": run.clip.category,
            "label": run.clip.label, "fold": run.clip.fold, "seconds": round(run.seconds, 3),
            "events": len(run.events), "classes": classes,
            "class": None if top is None else top.get("class"),
            "peak_probability": None if top is None else top.get("peak_probability"),
            "error": run.error}


def summarise(runs: list[FileRun], class_names: list[str] | None,
              expected: dict[str, str]) -> dict[str, Any]:
    """Per-category and overall numbers of the readable files."""
    ok = [r for r in runs if r.error is None]
    per_cat: dict[tuple[str, str], dict[str, Any]] = {}
    for r in ok:
        key = (r.clip.category, r.clip.label)
        row = per_cat.setdefault(key, {"category": key[0], "label": key[1], "clips": 0,
                                       "flagged": 0, "events": 0, "seconds": 0.0})
        row["clips"] += 1
        row["flagged"] += int(r.flagged)
        row["events"] += len(r.events)
        row["seconds"] += r.seconds
    order = {"danger": 0, "safe": 1, "ambiguous": 2}
    categories = sorted(per_cat.values(), key=lambda x: (order[x["label"]], x["category"]))
    for row in categories:
        row["rate"] = _rate(row["flagged"], row["clips"])
        row["seconds"] = round(row["seconds"], 1)

    danger = [r for r in ok if r.clip.label == "danger"]
    safe = [r for r in ok if r.clip.label == "safe"]
    recall = _rate(sum(r.flagged for r in danger), len(danger))
    false_alarms = _rate(sum(r.flagged for r in safe), len(safe))
    balanced = None if recall is None or false_alarms is None else (recall + 1 - false_alarms) / 2
    long_safe = [r for r in safe if r.seconds >= LONG_S]
    long_h = sum(r.seconds for r in long_safe) / 3600
    safe_h = sum(r.seconds for r in safe) / 3600
    summary: dict[str, Any] = {
        "files": len(runs), "unreadable": len(runs) - len(ok),
        "clips": dict(Counter(r.clip.label for r in ok)),
        "danger_recall": recall, "safe_false_alarm_rate": false_alarms,
        "balanced_accuracy": balanced,
        "long_safe_files": len(long_safe), "long_safe_hours": round(long_h, 4),
        "long_safe_events": sum(len(r.events) for r in long_safe),
        "false_events_per_hour_long": (sum(len(r.events) for r in long_safe) / long_h
                                       if long_h else None),
        "safe_hours": round(safe_h, 4), "safe_events": sum(len(r.events) for r in safe),
        "false_events_per_safe_hour": (sum(len(r.events) for r in safe) / safe_h
                                       if safe_h else None),
        "per_category": categories,
        "long_files": [{"file": r.clip.name, "category": r.clip.category,
                        "label": r.clip.label, "seconds": round(r.seconds, 1),
                        "events": len(r.events),
                        "classes": dict(Counter(str(e.get("class", "danger"))
                                                for e in r.events))}
                       for r in ok if r.seconds >= LONG_S],
    }
    if class_names is not None:
        summary["confusion"] = confusion(ok, class_names, expected)
    return summary


def confusion(runs: list[FileRun], class_names: list[str],
              expected: dict[str, str]) -> dict[str, Any]:
    """True category × class of the file's strongest event (``(none)``: no event)."""
    columns = [*class_names, NO_EVENT]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    right = all_right = judged = 0
    for r in runs:
        row = file_row(r)
        got = row["class"] if r.flagged else NO_EVENT
        got = got if got in columns else str(got)
        if got not in columns:
            columns.insert(-1, got)
        counts[r.clip.category][got] += 1
        if r.clip.label == "danger" and r.flagged and r.clip.category in expected:
            judged += 1
            right += int(got == expected[r.clip.category])
            all_right += int(all(c == expected[r.clip.category] for c in row["classes"]))
    rows = sorted(counts)
    return {"columns": columns, "rows": rows,
            "matrix": [[counts[c][k] for k in columns] for c in rows],
            "expected_class": expected,
            "flagged_danger_with_expected_class": judged,
            "class_correct_rate": _rate(right, judged),
            "all_events_class_correct_rate": _rate(all_right, judged)}


def evaluate_openworld(model_dir: str | Path, data: list[str | Path],
                       out: str | Path | None = None, *, fold: int | str | None = None,
                       threads: int | None = None) -> dict[str, Any]:
    """Replay every clip of ``data`` (``fold``: only that fold's; ``none``: only the rows
    without a fold) through the daemon; write and return the report."""
    start = time.perf_counter()
    fold = parse_fold(fold)
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    out = Path(out) if out is not None else model_dir / WORKBENCH / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    clips: list[LabelledClip] = []
    evaluated = []
    warnings = []
    for folder in map(Path, data):
        found = read_labelled(folder, fold)
        clips += found
        where = f"{folder}" + (f" fold {fold}" if fold is not None else "")
        overlap = overlap_warning(manifest, found, where)
        if overlap:
            log.warning("%s", overlap)
            warnings.append(overlap)
        evaluated.append({"data": str(folder.resolve()), "layout": layout(folder),
                          "fold": fold, "clips": len(found),
                          "training_clips": len(trained_clips(manifest, found))})

    detector = open_detector(model_dir, threads)
    config = cli_event_config(detector.threshold)
    runs = replay(detector, clips, config, desc="evaluate")
    class_names = list(manifest.classes.names) if manifest.classes else None
    expected = (expected_classes(sorted({c.category for c in clips if c.label == "danger"}),
                                 manifest) if class_names else {})
    report: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_dir": str(model_dir.resolve()), "model_sha256": detector.model_id,
        "backbone": manifest.backbone.name,
        "classes": class_names, "trained_on": trained_on(manifest),
        "evaluated": evaluated, "warnings": warnings,
        "path": "edge_runtime.daemon.Runner per file (edge-detect --once --events); "
                "flagged = at least one event",
        "event_rules": {"threshold": config.threshold, "off_threshold": config.off,
                        "min_duration_s": config.min_duration_s,
                        "cooldown_s": config.cooldown_s,
                        "chunk_decisions": detector.chunk_decisions},
        **summarise(runs, class_names, expected),
        "per_file": [file_row(r) for r in runs],
    }
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["markdown"] = markdown(report)
    plot(report, out / f"{STEM}.png")
    save_report(out, STEM, report, report["markdown"])
    report["out"] = str(out)
    return report


# --- output ---------------------------------------------------------------------------------

def markdown(report: dict[str, Any]) -> str:
    """Summary, per-category table, class confusion and long files."""
    data = "; ".join(f"{e['data']} ({e['layout']}" +
                     (f", fold {e['fold']}" if e["fold"] is not None else "") +
                     f", {e['clips']} clips)" for e in report["evaluated"])
    rules = report["event_rules"]
    n = report["clips"]
    lines = [
        f"# Open-world evaluation: {report['backbone']} model {report['model_sha256'][:12]}",
        "",
        f"Data: {data}. Path: {report['path']}; event threshold {rules['threshold']:.3f} "
        f"(off {rules['off_threshold']:.3f}), min {rules['min_duration_s']} s, cooldown "
        f"{rules['cooldown_s']} s.",
        "",
    ]
    lines += [f"**Warning:** {w}" for w in report["warnings"]]
    lines += [
        "",
        "| danger recall | safe false alarms | balanced acc. | danger / safe / ambiguous | "
        "false events/h (long safe files) | events per safe hour |",
        "|---|---|---|---|---|---|",
        f"| {fmt(report['danger_recall'])} | {fmt(report['safe_false_alarm_rate'])} | "
        f"{fmt(report['balanced_accuracy'])} | {n.get('danger', 0)} / {n.get('safe', 0)} / "
        f"{n.get('ambiguous', 0)} | {fmt(report['false_events_per_hour_long'], 1)} "
        f"({report['long_safe_events']} in {report['long_safe_hours'] * 60:.1f} min, "
        f"{report['long_safe_files']} files) | {fmt(report['false_events_per_safe_hour'], 1)} "
        f"({report['safe_events']} in {report['safe_hours'] * 60:.1f} min) |",
        "",
        "| category | label | clips | flagged | rate | events | audio s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["per_category"]:
        what = {"danger": "recall", "safe": "false alarms"}.get(row["label"], "flagged")
        lines.append(f"| {row['category']} | {row['label']} | {row['clips']} | {row['flagged']} | "
                     f"{fmt(row['rate'])} ({what}) | {row['events']} | {row['seconds']} |")
    conf = report.get("confusion")
    if conf:
        lines += ["", "Class of each file's strongest event (rows: true category):", "",
                  "| category | " + " | ".join(conf["columns"]) + " |",
                  "|---" * (len(conf["columns"]) + 1) + "|"]
        for cat, counts in zip(conf["rows"], conf["matrix"], strict=True):
            lines.append(f"| {cat} | " + " | ".join(str(v) for v in counts) + " |")
        lines += ["", f"Flagged danger clips whose strongest event has the expected class: "
                      f"{fmt(conf['class_correct_rate'])}, all of whose events have it: "
                      f"{fmt(conf['all_events_class_correct_rate'])}, of "
                      f"{conf['flagged_danger_with_expected_class']} (expected class: "
                      + ", ".join(f"{k} → {v}" for k, v in conf["expected_class"].items())
                      + ")."]
    if report["long_files"]:
        lines += ["", f"Files of at least {LONG_S:.0f} s:", "",
                  "| file | category | label | seconds | events | by class |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {f['file']} | {f['category']} | {f['label']} | {f['seconds']} | "
                  f"{f['events']} | " + ", ".join(f"{k} {v}" for k, v in f["classes"].items())
                  + " |" for f in report["long_files"]]
    bad = [f for f in report["per_file"] if f["error"]]
    if bad:
        lines += ["", f"Unreadable files ({len(bad)}, not counted): "
                      + "; ".join(f["error"] for f in bad[:10])]
    lines += ["", f"Trained on (manifest): {trained_text(report['trained_on'])}.", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """Bar per category (flagged fraction; colour = label) and, with classes, the confusion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_category"]
    conf = report.get("confusion")
    fig, axes = plt.subplots(1, 2 if conf else 1, squeeze=False,
                             figsize=(max(7.0, 0.45 * len(rows) + 2) + (7 if conf else 0), 5))
    ax = axes[0][0]
    colours = {"danger": "tab:red", "safe": "tab:green", "ambiguous": "tab:gray"}
    x = np.arange(len(rows))
    ax.bar(x, [r["rate"] or 0.0 for r in rows], color=[colours[r["label"]] for r in rows])
    for i, r in enumerate(rows):
        ax.text(i, (r["rate"] or 0.0) + 0.01, f"{r['flagged']}/{r['clips']}", ha="center",
                va="bottom", fontsize=7)
    ax.set_xticks(x, [r["category"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of files with an event")
    ax.set_title(f"recall {fmt(report['danger_recall'], 2)}, false alarms "
                 f"{fmt(report['safe_false_alarm_rate'], 2)}, bal. acc. "
                 f"{fmt(report['balanced_accuracy'], 2)} (red danger, green safe, "
                 "grey ambiguous)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    if conf:
        cm = np.array(conf["matrix"], dtype=float)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        cax = axes[0][1]
        cax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                cax.text(j, i, str(int(v)), ha="center", va="center", fontsize=7,
                         color="white" if share[i, j] > 0.5 else "black")
        cax.set_xticks(range(len(conf["columns"])), conf["columns"], rotation=60, ha="right",
                       fontsize=8)
        cax.set_yticks(range(len(conf["rows"])), conf["rows"], fontsize=8)
        cax.set_title("class of the strongest event", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
