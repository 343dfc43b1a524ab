"""Parity: sklearn vs classifier.onnx on every cached embedding, and end_to_end.onnx vs the torch
backbone → sklearn. Random-init Cnn14 (``trained_model_dir``): parity only, no quality claim."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edge_runtime.manifest import load_manifest, verify_file
from edge_runtime.sessions import load_sessions
from training.bundle import END_TO_END
from training.classifiers import make_pipeline
from training.dataset import load_audio, read_dataset
from training.evaluate import choose_threshold, cross_validate
from training.mapping import binary_mapping
from training.onnx_classifier import run_classifier_onnx, save_atomic, to_onnx


def cached(model_dir: Path) -> dict[str, np.ndarray]:
    (path,) = (model_dir / ".workbench").glob("embeddings-*.npz")
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {imp.domain: imp.version for imp in model.opset_import}


def test_classifier_onnx_contract(trained_model_dir: Path) -> None:
    model = onnx.load(str(trained_model_dir / "classifier.onnx"))
    assert opsets(model) == {"": 18, "ai.onnx.ml": 3}
    assert len(model.opset_import) == 2
    assert [i.name for i in model.graph.input] == ["embedding"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    assert "ZipMap" not in {n.op_type for n in model.graph.node}
    out = model.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.FLOAT
    assert out.shape.dim[1].dim_value == 2


def test_exported_classifier_matches_sklearn_on_every_embedding(trained_model_dir: Path) -> None:
    data = cached(trained_model_dir)
    pipeline = joblib.load(trained_model_dir / ".workbench" / "pipeline-logreg.joblib")
    ref = pipeline.predict_proba(data["x"])
    got = run_classifier_onnx(trained_model_dir / "classifier.onnx", data["x"])
    assert got.shape == (len(data["x"]), 2) and got.dtype == np.float32
    assert np.abs(ref - got).max() <= 1e-5


@pytest.mark.parametrize("kind", ["logreg", "mlp", "rf"])
def test_skl2onnx_parity_per_kind(trained_model_dir: Path, tmp_path: Path, kind: str) -> None:
    data = cached(trained_model_dir)
    x, y, folds = data["x"], data["label"], data["fold"]
    pipeline = make_pipeline(kind, seed=0).fit(x, y)
    path = tmp_path / f"{kind}.onnx"
    save_atomic(to_onnx(pipeline, x.shape[1]), path)
    ref = pipeline.predict_proba(x)[:, 1]
    got = run_classifier_onnx(path, x)[:, 1]
    if kind in ("logreg", "mlp"):
        assert np.abs(ref - got).max() <= 1e-5
    else:
        # Trees compare float32 inputs to float32-cast split thresholds; a value within one ulp
        # of a threshold could flip a split. Count decisions that differ at the operating
        # threshold (chosen from out-of-fold probabilities, as build does): zero on ESC-10.
        oof, _ = cross_validate(make_pipeline(kind, seed=0), x, y, folds)
        threshold = choose_threshold(y, oof)
        assert int(((ref >= threshold) != (got >= threshold)).sum()) == 0
        assert np.abs(ref - got).max() <= 1e-5


def test_manifest_lists_classifier_and_threshold(trained_model_dir: Path) -> None:
    manifest = load_manifest(trained_model_dir)
    verify_file(trained_model_dir, manifest, "classifier")
    e2e = manifest.workbench["end_to_end"]  # a workbench file, not a device file
    assert "end_to_end" not in manifest.files and e2e.path == ".workbench/end_to_end.onnx"
    assert verify_file(trained_model_dir, manifest.replace(files=dict(manifest.workbench)),
                       "end_to_end")
    section = manifest.classifier
    assert section.kind == "logreg"
    assert section.classes == ("safe", "danger")
    assert (section.output, section.danger_column) == ("probabilities", 1)
    assert section.threshold_target == {"danger_recall": 0.95}
    assert 0.0 < section.threshold < 1.0
    assert section.mapping["danger"] == ["dog", "crying_baby", "siren", "chainsaw"]
    assert section.cv["at_threshold"]["danger_recall"] >= 0.95
    assert section.trained_on["data"] == "esc10"  # the folder's name, not a build-machine path
    shipped = {p.suffix for p in trained_model_dir.iterdir() if p.is_file()}
    assert not shipped & {".joblib", ".pkl", ".pickle"}  # pickles stay in .workbench/
    sessions = load_sessions(trained_model_dir, provider="cpu")
    assert sessions.classifier is not None
    assert sessions.threshold == pytest.approx(section.threshold)


def test_end_to_end_matches_torch_then_sklearn(trained_model_dir: Path, cnn14_checkpoint: Path,
                                               esc10_dir: Path) -> None:
    import torch

    from export import backbones, weights

    model = onnx.load(str(trained_model_dir / END_TO_END), load_external_data=False)
    assert opsets(model) == {"": 18, "ai.onnx.ml": 3}
    assert [o.name for o in model.graph.output] == ["p_danger", "embedding", "audioset_probs"]

    _, (frames_m, pooling_m, head_m) = backbones.build(
        "cnn14", weights.load_state_dict(cnn14_checkpoint))
    pipeline = joblib.load(trained_model_dir / ".workbench" / "pipeline-logreg.joblib")
    clips = read_dataset(esc10_dir, binary_mapping(), per_fold_limit=1)
    picked = [next(c for c in clips if c.label == 1), next(c for c in clips if c.label == 0),
              clips[-1]]
    audio = np.stack([load_audio(c.path) for c in picked])  # 5 s clips = 5 device chunks
    chunk = load_manifest(trained_model_dir).streaming.chunk_samples
    with torch.no_grad():  # the device's features in torch: backbone per chunk, pool per clip
        frames = frames_m(torch.from_numpy(audio).reshape(-1, chunk))
        emb_t = pooling_m(frames.reshape(len(picked), -1, frames.shape[-1]))
        tags_t = head_m(emb_t).numpy()
    ref = pipeline.predict_proba(emb_t.numpy())[:, 1]

    sess = ort.InferenceSession(str(trained_model_dir / END_TO_END),
                                providers=["CPUExecutionProvider"])
    p, emb, tags = sess.run(None, {"waveform": audio})
    assert p.shape == (3,)
    assert np.abs(p - ref).max() <= 1e-4
    assert np.abs(tags - tags_t).max() <= 1e-4
    np.testing.assert_allclose(emb, emb_t.numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("seconds", [0.2, 2.5, 5.0])
def test_end_to_end_computes_the_device_features(trained_model_dir: Path, seconds: float) -> None:
    """In-graph chunking equals edge_runtime.features.embed_audio (one window per input)."""
    from edge_runtime.features import embed_audio

    sessions = load_sessions(trained_model_dir, provider="cpu")
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal((2, int(seconds * 32_000)))).astype(np.float32)
    sess = ort.InferenceSession(str(trained_model_dir / END_TO_END),
                                providers=["CPUExecutionProvider"])
    p, emb, _ = sess.run(None, {"waveform": audio})
    for row in range(2):
        ref, spans = embed_audio(sessions, audio[row])
        assert len(spans) == 1
        np.testing.assert_allclose(emb[row], ref[0], rtol=1e-5, atol=1e-5)
        assert p[row] == pytest.approx(sessions.classifier.run(None, {"embedding": ref})[0][0, 1],
                                       abs=1e-5)
