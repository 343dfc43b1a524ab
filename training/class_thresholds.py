"""Per-class thresholds of a class model, from out-of-group scores of its training recordings.

A class raises an event in a recording at threshold t when the recording's **level** for the
class reaches t. Without persistence the level is the recording's loudest scored window; with
``min_seconds`` (:mod:`edge_runtime.persistence`) it is the
:func:`~edge_runtime.persistence.release_level`: the best score the class *holds* over
consecutive windows spanning ``min_seconds``. A 4 s safe clip can never hold a persisted class,
so its peak says nothing about that class's false events; long safe recordings (hours of
synthetic home audio, real ambiences) do. Levels are computed on the windows the daemon scores
(every ``window_stride``-th one, and the last), with their real end times.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge_runtime.persistence import TOLERANCE, release_level
from training.class_model import ClassPlan

log = logging.getLogger(__name__)

# Share of safe files (out of group, their loudest window) allowed to raise some class, split
# evenly over the classes: with the 9 default classes each class may flag 0.22 %. The product's
# target is at most 3 % of safe recordings flagged; 2 % leaves room for recordings unlike any
# in training.
SAFE_FILE_BUDGET = 0.02
# ... but each class may always pass its 2 highest-scoring safe files: a class's top safe files
# are often mislabelled or mixed (an UrbanSound8K "children playing" clip with a dog barking in
# it scored 0.986 as dog_bark out of group and alone pushed that threshold to 0.986: held-out dog
# recall 0.60). With ~400-800 safe files a 0.2 % quantile cannot be estimated anyway. Never
# more than 0.5 % of the safe files, though: a small build (120 safe files) passing its top 2
# set a gunshot threshold that a clock tick reached.
MIN_PASSED_FILES = 2
MAX_PASSED_SHARE = 0.005
THRESHOLD_RANGE = (0.0, 0.995)  # lower bound: each evidence's default (ClassPlan)


@dataclass(frozen=True)
class ScoredWindows:
    """Where each embedding row sits in its recording, as the daemon would score it.

    The daemon scores every ``stride``-th window and a recording's last one; which windows
    are "every stride-th" depends on where the stream started (a file starts at chunk 0, a
    live stream anywhere), so levels are taken over every phase: the best one for safe
    recordings (what could raise a false event), the worst for a real danger recording (what
    it is sure to hold)."""

    files: np.ndarray  # [rows] recording of each row
    window: np.ndarray  # [rows] the row window's first chunk (hop 1)
    ends: np.ndarray  # [rows] its end in seconds; a recording's last at the recording's length
    is_last: np.ndarray  # [rows] bool: the recording's last window
    stride: int

    @classmethod
    def of(cls, files: np.ndarray, window: np.ndarray, window_chunks: int, stride: int,
           chunk_s: float, durations: dict[str, float] | None = None) -> ScoredWindows:
        """From the embedding cache's rows; ``durations`` (seconds per recording) cap each
        last window's end where the audio stops, as the detector reports it."""
        files, window = np.asarray(files), np.asarray(window, np.int64)
        last: dict[str, int] = {}
        for f, w in zip(files, window, strict=True):
            last[f] = max(last.get(f, -1), int(w))
        is_last = np.array([w == last[f] for f, w in zip(files, window, strict=True)], bool)
        ends = (window + window_chunks) * float(chunk_s)
        if durations:
            ends = np.minimum(ends, [durations.get(f, np.inf) for f in files])
        return cls(files, window, ends, is_last, max(1, int(stride)))

    def levels(self, rows: np.ndarray, values: np.ndarray, min_seconds: float,
               short: Literal["skip", "sustain"] = "skip",
               phases: Literal["best", "worst"] = "best") -> dict[str, float]:
        """Per recording among ``rows`` (bool mask): its level for ``values`` [rows] with
        persistence ``min_seconds`` (0: its loudest scored window), over the stride phases
        (``best`` or ``worst``). A recording too short to span ``min_seconds``: left out
        (``short="skip"``: it can never raise the class) or its lowest scored window
        (``short="sustain"``: what it would hold if the sound went on, as an alarm does)."""
        out: dict[str, float] = {}
        pick = max if phases == "best" else min
        index = np.flatnonzero(rows)
        index = index[np.lexsort((self.window[index], self.files[index]))]  # by file, window
        files = self.files[index]
        starts = np.flatnonzero(np.r_[True, files[1:] != files[:-1]])
        for mine in np.split(index, starts[1:]):
            if mine.size == 0:
                continue
            found = [level for phase in range(self.stride)
                     if (level := self._level(mine, values, phase, min_seconds, short))
                     is not None]
            if found:
                out[str(self.files[mine[0]])] = float(pick(found))
        return out

    def _level(self, mine: np.ndarray, values: np.ndarray, phase: int, min_seconds: float,
               short: str) -> float | None:
        """One recording's level when its scored windows start at ``phase``."""
        kept = mine[(self.window[mine] % self.stride == phase) | self.is_last[mine]]
        if kept.size == 0:
            return None
        ends, v = self.ends[kept], values[kept]
        if min_seconds <= 0:
            return float(v.max())
        if ends[-1] - ends[0] >= min_seconds - TOLERANCE:
            return release_level(v, ends, min_seconds)
        return float(v.min()) if short == "sustain" else None


def zero_shot_ceilings(plan: ClassPlan, head: np.ndarray | None, danger_class: np.ndarray,
                       windows: ScoredWindows, real: np.ndarray) -> dict[str, float]:
    """Per zero-shot class with real recordings in training (fewer than ``min_clips``: "this
    is our smoke alarm"): the lowest of their levels on the head's evidence. Its threshold
    stays below that, so every such recording is still detected."""
    ceilings: dict[str, float] = {}
    if head is None:
        return ceilings
    for name, labels in plan.zero_shot.items():
        rows = real & (danger_class == name)
        levels = windows.levels(rows, head[:, labels].max(axis=1), plan.persistence(name),
                                short="sustain", phases="worst")
        if levels:
            ceilings[name] = min(levels.values())
    return ceilings


def choose_thresholds(plan: ClassPlan, oof: np.ndarray, y: np.ndarray, windows: ScoredWindows,
                      rate: float, ceilings: dict[str, float] | None = None,
                      setters: dict[str, tuple[str, float]] | None = None) -> list[float]:
    """Per class: the lowest threshold at which at most ``rate`` of the safe recordings that
    could raise it (out of group, their level), or ``MIN_PASSED_FILES`` of them (at most
    ``MAX_PASSED_SHARE`` of all), would raise it; for a zero-shot class never above its
    ``ceilings`` value (just under its weakest real recording); never below the default of
    the class's evidence (few safe files cannot vouch for a low threshold). A persisted class
    with no safe recording long enough to hold it falls back to the recordings' peaks.
    ``setters``, when given, gets each class's safe recording that set its threshold (and its
    level)."""
    ceilings = ceilings or {}
    thresholds = []
    safe = (y == 0) & ~np.isnan(oof[:, 0])
    for k, name in enumerate(plan.names):
        levels = windows.levels(safe, oof[:, k], plan.persistence(name))
        if not levels and plan.persistence(name) > 0:
            log.info("%s: no safe recording is long enough to hold it for %g s; its threshold "
                     "comes from the recordings' peaks", name, plan.persistence(name))
            levels = windows.levels(safe, oof[:, k], 0.0)
        ranked = sorted(levels.items(), key=lambda item: item[1])
        values = np.array([v for _, v in ranked])
        if values.size == 0:
            thresholds.append(plan.default_thresholds()[k])
            continue
        allowed = max(int(np.floor(rate * values.size)),
                      min(MIN_PASSED_FILES, int(np.floor(MAX_PASSED_SHARE * values.size))))
        t = raised = values[values.size - 1 - allowed] + 1e-4  # above the (allowed+1)-th
        log.info("%s: top safe files (%d passed, the next sets the threshold): %s", name,
                 allowed, ", ".join(f"{f} {v:.3f}" for f, v in ranked[::-1][:allowed + 1]))
        if name in ceilings:
            t = min(t, ceilings[name] - 1e-4)
        floor = plan.default_thresholds()[k]  # never below the evidence's default
        if name in ceilings and ceilings[name] <= floor:
            log.warning("%s: a real recording of it in training holds only %.3f, under the "
                        "lowest threshold %.3f of its evidence; it will be missed", name,
                        ceilings[name], floor)
        chosen = float(np.clip(t, floor, THRESHOLD_RANGE[1]))
        if setters is not None and chosen > floor and t == raised:  # no ceiling, no floor
            setters[name] = ranked[values.size - 1 - allowed]
        thresholds.append(chosen)
    return thresholds
