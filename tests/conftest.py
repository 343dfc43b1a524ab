"""Session fixtures: a seeded random-init Cnn14 checkpoint and its exported model dir.

Random-init weights (calibrated BatchNorm statistics, see ``export.cnn14.random_state_dict``)
are used for parity and plumbing only; they make no quality claim.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import shared_path

# Tests that need one of these build a model (export ≈ 10 s to 2 min, or a whole training
# build): they are the slow tier, ``pytest -m "not slow"`` leaves them out (.ci/run runs all).
HEAVY_FIXTURES = {"cnn14_checkpoint", "cnn14_model_dir", "trained_model_dir", "mn04_weights",
                  "mn04_model_dir", "mn04_class_model_dir"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny energy model (``tests.runtime_model``: ONNX built without torch),
    one per test module; a module that changes it defines its own."""
    from tests.runtime_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test (and the daemons it starts) keeps its state (MQTT spool, watched folders'
    records) in a folder of its own, never in the user's ``~/.local/state``."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test whose fixtures include a model build (HEAVY_FIXTURES)."""
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def esc10_dir() -> Path:
    """ESC-10 in ESC-50 layout (audio/*.flac, meta/esc50.csv) from ../shared."""
    return shared_path("esc10")


@pytest.fixture(scope="session")
def mn04_weights() -> Path:
    """Real EfficientAT mn04_as weights from ../shared."""
    return shared_path("weights", "mn04_as_mAP_432.pt")


@pytest.fixture(scope="session")
def cnn14_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded random-init Cnn14 saved in the official ``{"model": state_dict}`` format."""
    import torch

    from export.cnn14 import random_state_dict

    path = tmp_path_factory.mktemp("weights") / "random_cnn14_seed0.pth"
    torch.save({"model": random_state_dict(seed=0)}, path)
    return path


@pytest.fixture(scope="session")
def cnn14_model_dir(cnn14_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edge-train export`` output (backbone, pooling, head, labels, manifest) — no classifier."""
    from export.pipeline import export_from_checkpoint

    out = tmp_path_factory.mktemp("model_cnn14")
    export_from_checkpoint(str(cnn14_checkpoint), out)
    return out


@pytest.fixture(scope="session")
def trained_model_dir(cnn14_model_dir: Path, esc10_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edge-train build`` output on ESC-10 danger/safe with the seed's binary mapping (2 clips
    per category and fold, 60 clips), LogReg, over a copy of ``cnn14_model_dir``: adds
    classifier.onnx, report.json/.md, PNGs, and ``.workbench/`` (embedding cache, joblib,
    end_to_end.onnx). Random-init backbone: plumbing and parity only, no quality claim."""
    import shutil

    from training.build import build
    from training.mapping import binary_mapping

    out = tmp_path_factory.mktemp("model_trained") / "model"
    shutil.copytree(cnn14_model_dir, out)
    build(esc10_dir, out, classifier="logreg", mapping=binary_mapping(), per_fold_limit=2,
          measure_offline=False)
    return out


@pytest.fixture(scope="session")
def mn04_model_dir(mn04_weights: Path, esc10_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edge-train build`` of the real mn04 weights on ESC-10 with the seed's binary mapping
    (2 clips per category and fold, LogReg): one shared build for the tests that only read it
    (mn04 pipeline, bundle, aarch64, quantize, reproducibility)."""
    from training.build import build
    from training.mapping import binary_mapping

    out = tmp_path_factory.mktemp("mn04_session") / "model"
    build(esc10_dir, out, str(mn04_weights), classifier="logreg", mapping=binary_mapping(),
          per_fold_limit=2, measure_offline=False)
    return out


@pytest.fixture(scope="session")
def mn04_class_model_dir(mn04_weights: Path, esc10_dir: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``edge-train build`` with the real mn04 weights and the default mapping (a class model:
    events carry their class) on ESC-10, 2 clips per category and fold: a real model dir that
    builds in about a minute, for end-to-end tests."""
    from training.build import build

    out = tmp_path_factory.mktemp("mn04_class_model") / "model"
    build(esc10_dir, out, str(mn04_weights), classifier="logreg", per_fold_limit=2,
          measure_offline=False)
    return out
