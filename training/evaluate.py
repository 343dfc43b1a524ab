"""Leave-one-fold-out evaluation over ESC-50's folds, operating threshold, plots, summary.

Never a random split: ESC-50's folds keep clips cut from one recording together, so a random
split would leak near-duplicates into the test set (the old prototype's mistake).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import Pipeline

from edge_runtime import atomic
from training.defaults import DEFAULT_TARGET_RECALL


def metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    """Accuracy, balanced accuracy, danger recall/precision, ROC-AUC, confusion at a threshold.

    The confusion matrix is ``[[TN, FP], [FN, TP]]`` (rows true safe/danger).
    """
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "threshold": float(threshold),
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else math.nan,
        "danger_recall": float(recall_score(y, pred, zero_division=0)),
        "danger_precision": float(precision_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else math.nan,
        "false_alarms": int(((pred == 1) & (y == 0)).sum()),
        "confusion": confusion_matrix(y, pred, labels=[0, 1]).tolist(),
    }


def cross_validate(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, folds: np.ndarray
                   ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Leave-one-fold-out: out-of-fold p(danger) for every row and per-fold metrics at 0.5."""
    oof = np.full(len(y), np.nan)
    per_fold = []
    for fold in np.unique(folds):
        test = folds == fold
        model = clone(pipeline)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x[~test], y[~test])
        oof[test] = model.predict_proba(x[test])[:, 1]
        per_fold.append({"fold": int(fold), **metrics(y[test], oof[test], 0.5)})
    return oof, per_fold


def choose_threshold(y: np.ndarray, p: np.ndarray, target_recall: float = DEFAULT_TARGET_RECALL
                     ) -> float:
    """Highest threshold whose danger recall is ≥ ``target_recall`` (fewest false alarms).

    Raising the threshold never adds false alarms, so the best one keeps just enough danger
    clips: the k-th highest danger probability, k = ceil(target · positives). It is placed
    halfway to the next lower probability so float32 rounding on the device cannot flip it.
    """
    pos = np.sort(p[y == 1])[::-1]
    if pos.size == 0:
        raise ValueError("no danger examples to choose a threshold from")
    k = max(1, math.ceil(target_recall * pos.size - 1e-9))
    kth = float(pos[k - 1])
    below = p[p < kth]
    return (kth + float(below.max())) / 2 if below.size else kth


def evaluate(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, folds: np.ndarray,
             target_recall: float = DEFAULT_TARGET_RECALL) -> dict[str, Any]:
    """CV report of one pipeline: per-fold, pooled out-of-fold at 0.5 and at the threshold."""
    oof, per_fold = cross_validate(pipeline, x, y, folds)
    threshold = choose_threshold(y, oof, target_recall)
    accs = [f["accuracy"] for f in per_fold]
    return {
        "per_fold": per_fold,
        "fold_accuracy_mean": float(np.mean(accs)),
        "fold_accuracy_std": float(np.std(accs)),
        "at_0.5": metrics(y, oof, 0.5),
        "threshold": threshold,
        "threshold_target": {"danger_recall": target_recall},
        "at_threshold": metrics(y, oof, threshold),
        "oof_probability": oof,
    }


def plot_confusions(results: dict[str, dict[str, Any]], path: Path) -> None:
    """One confusion matrix per classifier (out-of-fold, at its operating threshold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4), squeeze=False)
    for ax, (kind, res) in zip(axes[0], results.items(), strict=True):
        cm = np.array(res["at_threshold"]["confusion"])
        ax.imshow(cm, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=14,
                    color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks([0, 1], ["safe", "danger"])
        ax.set_yticks([0, 1], ["safe", "danger"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{kind} (t={res['threshold']:.3f})")
    fig.suptitle("Out-of-fold confusion at the operating threshold")
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc_pr(results: dict[str, dict[str, Any]], y: np.ndarray, path: Path) -> None:
    """ROC and precision-recall curves of the out-of-fold probabilities, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    for kind, res in results.items():
        p = res["oof_probability"]
        fpr, tpr, _ = roc_curve(y, p)
        (line,) = roc_ax.plot(fpr, tpr, label=f"{kind} (AUC {res['at_0.5']['roc_auc']:.3f})")
        prec, rec, _ = precision_recall_curve(y, p)
        pr_ax.plot(rec, prec, label=kind, color=line.get_color())
        op = res["at_threshold"]
        pr_ax.scatter([op["danger_recall"]], [op["danger_precision"]], marker="o", s=30,
                      color=line.get_color(), zorder=3)
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="danger recall", title="ROC (out-of-fold)")
    pr_ax.set(xlabel="danger recall", ylabel="danger precision",
              title="Precision-recall (dots: operating points)", ylim=(0, 1.02))
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Save a PNG through a temporary name, then close the figure."""
    import matplotlib.pyplot as plt

    atomic.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def markdown_table(results: dict[str, dict[str, Any]], chosen: str) -> str:
    """Fold-CV table: mean±std fold accuracy, then pooled out-of-fold metrics."""
    lines = [
        "| classifier | fold acc (mean ± std) | bal. acc @0.5 | recall @0.5 | precision @0.5 | "
        "ROC-AUC | threshold | recall @t | precision @t | false alarms @t |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in results.items():
        a, t = r["at_0.5"], r["at_threshold"]
        name = f"**{kind}**" if kind == chosen else kind
        lines.append(
            f"| {name} | {r['fold_accuracy_mean']:.3f} ± {r['fold_accuracy_std']:.3f} | "
            f"{a['balanced_accuracy']:.3f} | {a['danger_recall']:.3f} | "
            f"{a['danger_precision']:.3f} | {a['roc_auc']:.3f} | {r['threshold']:.3f} | "
            f"{t['danger_recall']:.3f} | {t['danger_precision']:.3f} | "
            f"{t['false_alarms']}/{t['confusion'][0][0] + t['confusion'][0][1]} |")
    return "\n".join(lines)


def fold_table(results: dict[str, dict[str, Any]]) -> str:
    """Per-fold accuracy (threshold 0.5) of every classifier."""
    folds = [f["fold"] for f in next(iter(results.values()))["per_fold"]]
    lines = ["| classifier | " + " | ".join(f"fold {f}" for f in folds) + " |",
             "|---|" + "---|" * len(folds)]
    for kind, r in results.items():
        lines.append(f"| {kind} | " + " | ".join(f"{f['accuracy']:.3f}" for f in r["per_fold"])
                     + " |")
    return "\n".join(lines)
