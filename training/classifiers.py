"""The three danger/safe classifiers: StandardScaler + LogReg / RandomForest / MLP (seeded)."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from training.defaults import KINDS

__all__ = ["KINDS", "make_pipeline"]


def make_pipeline(kind: str, seed: int = 0) -> Pipeline:
    """An unfitted ``scaler → classifier`` pipeline; LogReg and RF use balanced class weights.

    The MLP has no class weights in scikit-learn; its classes are balanced by the default
    mapping and the operating threshold is chosen afterwards on out-of-fold probabilities.
    """
    if kind == "logreg":
        clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000,
                                 random_state=seed)
    elif kind == "rf":
        clf = RandomForestClassifier(n_estimators=200, class_weight="balanced",
                                     min_samples_leaf=1, random_state=seed, n_jobs=1)
    elif kind == "mlp":
        clf = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=500,
                            early_stopping=False, random_state=seed)
    else:
        raise ValueError(f"unknown classifier {kind!r}; choose one of {', '.join(KINDS)}")
    return Pipeline([("scaler", StandardScaler()), ("clf", clf)])
