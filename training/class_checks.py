"""What a class model's own training recordings reach: out of group, against the thresholds
the build chose (a threshold a safe recording raised over most of its class); in sample, per
``--extra`` folder (a user's own recordings the final model still does not report, often
because the AudioSet head does not hear them as the class: the head gate)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from training.class_model import ClassPlan
from training.class_thresholds import ScoredWindows
from training.household import CATEGORY as HOME_CATEGORY

log = logging.getLogger(__name__)

# A threshold raised above its evidence's default that loses more than this share of the
# class's own training recordings (out of group) gets a warning: the build's safe audio holds
# something the class cannot tell from its sound (a newcomer's own 520 Hz alarm: the synthetic
# home then held smoke_alarm at 0.998, the threshold rose to 0.995 and 3 of the 25 recordings
# reaching 0.5 still reached it). Out of group is pessimistic (the final model also learns the
# safe sound that raised it): the README build's gunshot threshold, raised to 0.984 by the
# synthetic home's coughs, keeps 31 of the 53 (held-out folds still found 23/26 at 0.978).
RECALL_LOSS_WARNING = 0.5


@dataclass(frozen=True)
class OwnRecall:
    """How many of a class's real training recordings reach its threshold out of group."""

    name: str
    recordings: int
    reached: int  # at the chosen threshold
    reached_at_default: int  # at the evidence's default threshold
    default: float  # that default
    missed: tuple[tuple[str, float], ...]  # (recording, level), lowest first


def own_recall(plan: ClassPlan, oof: np.ndarray, windows: ScoredWindows,
               danger_class: np.ndarray, real: np.ndarray,
               thresholds: list[float]) -> list[OwnRecall]:
    """Per class with real training recordings: their out-of-group levels (what each is sure
    to hold; a persisted class's short recording as if it went on) against the threshold."""
    out = []
    scored = real & ~np.isnan(oof[:, 0])
    for k, name in enumerate(plan.names):
        levels = windows.levels(scored & (danger_class == name), oof[:, k],
                                plan.persistence(name), short="sustain", phases="worst")
        if not levels:
            continue
        floor = plan.default_thresholds()[k]
        missed = sorted(((f, v) for f, v in levels.items() if v < thresholds[k]),
                        key=lambda item: item[1])
        out.append(OwnRecall(name, len(levels), len(levels) - len(missed),
                             sum(v >= floor for v in levels.values()), floor, tuple(missed)))
    return out


def report_own_recall(recalls: list[OwnRecall], thresholds: dict[str, float],
                      setters: dict[str, tuple[str, float]]) -> None:
    """One line for every class; a warning for a class whose raised threshold loses more than
    ``RECALL_LOSS_WARNING`` of its own recordings, naming the safe file that raised it."""
    log.info("training recordings reaching their class's threshold out of group (and its "
             "evidence's default): %s",
             ", ".join(f"{r.name} {r.reached}/{r.recordings}"
                       + (f" ({r.reached_at_default})" if r.reached != r.reached_at_default
                          else "") for r in recalls) or "-")
    for r in recalls:
        if r.reached >= (1 - RECALL_LOSS_WARNING) * r.reached_at_default:
            continue  # also a class whose recordings all share one group (none reach it)
        setter, level = setters.get(r.name, ("?", float("nan")))
        if setter.startswith(f"{HOME_CATEGORY}/"):  # the build's own: say where it lies
            setter += (" (the build's synthetic home audio: MODEL/.workbench/home/audio, "
                       "what it holds when: .workbench/home/timeline)")
        shown = ", ".join(f"{f} {v:.3f}" for f, v in r.missed[:3])
        log.warning("%s: its threshold %.3f (set by the safe recording %s, %.3f) leaves %d of "
                    "its %d training recordings undetected out of group (%d reach the default "
                    "threshold), e.g. %s; is that safe recording mislabelled, or like the "
                    "sound? Add safe recordings of what it holds, more recordings of the "
                    "class, or set it from your own home's audio: edge-train calibrate "
                    "--ambience DIR --min-threshold %g --lower %s", r.name,
                    thresholds[r.name], setter, level, r.recordings - r.reached, r.recordings,
                    r.reached_at_default, shown, r.default, r.name)


# An --extra folder whose recordings of a class the final model mostly does not report, though
# it trained on them, gets a warning: a newcomer's own 520 Hz alarm (10 recordings) — the head
# heard it as a smoke alarm at 0.03-0.06, and 9 stayed under the 0.995 threshold.
UNHEARD_WARNING = 0.5


@dataclass(frozen=True)
class Unheard:
    """A folder's recordings of one class that the final model does not report (in sample)."""

    folder: str
    name: str
    recordings: int
    missed: tuple[str, ...]
    under_gate: int  # of the missed: the head's evidence under the class's gate everywhere


def unheard(plan: ClassPlan, scores: np.ndarray, head: np.ndarray | None,
            windows: ScoredWindows, danger_class: np.ndarray, folders: np.ndarray,
            rows: np.ndarray, thresholds: list[float]) -> list[Unheard]:
    """Per (folder, class) among ``rows`` (real danger rows of trained classes): the
    recordings whose in-sample level (``scores``, the final model's raw class scores; a
    persisted class's short recording as if it went on) stays under the class threshold."""
    out = []
    for k, name in enumerate(plan.names):
        if name not in plan.trained:
            continue
        mine = rows & (danger_class == name)
        for folder in sorted(set(folders[mine].tolist())):
            at = mine & (folders == folder)
            levels = windows.levels(at, scores[:, k], plan.persistence(name),
                                    short="sustain", phases="worst")
            missed = sorted(f for f, v in levels.items() if v < thresholds[k])
            if not missed:
                continue
            under = 0
            if head is not None and name in plan.gates:
                evidence = windows.levels(at, head[:, plan.gate_labels[name]].max(axis=1), 0.0)
                under = sum(evidence.get(f, 0.0) < plan.gates[name] for f in missed)
            out.append(Unheard(folder, name, len(levels), tuple(missed), under))
    return out


def report_unheard(found: list[Unheard], gates: dict[str, float],
                   thresholds: dict[str, float]) -> None:
    """A warning for each folder and class the final model leaves mostly unreported."""
    for u in found:
        if len(u.missed) <= UNHEARD_WARNING * u.recordings:
            continue
        gate = (f"; the AudioSet head hears {u.under_gate} of them under the class's gate "
                f"{gates[u.name]:.3f} — add the labels it gives them to the class's heard_as "
                "in a --mapping" if 2 * u.under_gate >= len(u.missed) else "")
        log.warning("%s: %d of its %d %s recordings stay under the class's threshold %.3f "
                    "even in the model that trained on them (e.g. %s)%s; more recordings of "
                    "the sound, from where the microphone will be, help", u.folder,
                    len(u.missed), u.recordings, u.name, thresholds[u.name],
                    ", ".join(u.missed[:3]), gate)
