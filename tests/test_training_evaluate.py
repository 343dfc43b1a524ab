"""Fold CV never trains on its test fold; threshold choice; metrics; classifier pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from training.classifiers import KINDS, make_pipeline
from training.evaluate import choose_threshold, cross_validate, evaluate, metrics


class LeakDetector(ClassifierMixin, BaseEstimator):
    """Remembers the row ids (column 0) it was fitted on; fails if asked about one of them."""

    def fit(self, x, y):
        self.seen_ = set(x[:, 0].tolist())
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, x):
        assert not self.seen_ & set(x[:, 0].tolist()), "test rows were in the training set"
        return np.tile([0.5, 0.5], (len(x), 1))


def test_cross_validate_is_leave_one_fold_out() -> None:
    rng = np.random.default_rng(0)
    folds = np.repeat([1, 2, 3, 4, 5], 8)
    x = np.column_stack([np.arange(40), rng.normal(size=40)])
    y = np.tile([0, 1], 20)
    oof, per_fold = cross_validate(LeakDetector(), x, y, folds)
    assert [f["fold"] for f in per_fold] == [1, 2, 3, 4, 5]
    assert all(f["n"] == 8 for f in per_fold)
    assert not np.isnan(oof).any()


def test_choose_threshold_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        y = rng.integers(0, 2, 60)
        y[:2] = [0, 1]
        p = np.clip(y * 0.3 + rng.random(60) * 0.7, 0, 1)
        for target in (0.8, 0.95, 1.0):
            t = choose_threshold(y, p, target)
            m = metrics(y, p, t)
            assert m["danger_recall"] >= target
            feasible = [int(((p >= c) & (y == 0)).sum()) for c in np.unique(p)
                        if ((p >= c) & (y == 1)).sum() >= target * (y == 1).sum()]
            assert m["false_alarms"] == min(feasible)
            assert not np.any(p == t)  # strictly between two probabilities: float-safe


def test_metrics_values() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.2, 0.9, 0.4, 0.8])
    m = metrics(y, p, 0.5)
    assert m["confusion"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["danger_recall"] == pytest.approx(2 / 3)
    assert m["danger_precision"] == pytest.approx(2 / 3)
    assert m["false_alarms"] == 1
    assert m["roc_auc"] == pytest.approx(8 / 9)


@pytest.mark.parametrize("kind", KINDS)
def test_pipelines_learn_a_separable_problem(kind: str) -> None:
    rng = np.random.default_rng(2)
    y = np.tile([0, 1], 50)
    x = rng.normal(size=(100, 16)) + y[:, None] * 2.0
    folds = np.repeat([1, 2, 3, 4, 5], 20)
    result = evaluate(make_pipeline(kind, seed=0), x, y, folds)
    assert result["at_0.5"]["accuracy"] > 0.95
    assert result["at_threshold"]["danger_recall"] >= 0.95
    first = make_pipeline(kind, seed=0).fit(x, y).predict_proba(x)
    second = make_pipeline(kind, seed=0).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(first, second)  # seeded


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown classifier 'svm'"):
        make_pipeline("svm")
