"""``edge-train``: the workbench — fetch weights and data, export, train, evaluate, quantize."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from edge_runtime.manifest import DEFAULT_CHUNK_SECONDS, DEFAULT_WINDOW_CHUNKS
from edge_runtime.providers import MAX_THREADS
from edge_runtime.text import one_line
from training import logs
from training.defaults import BACKBONE_CHOICES, DEFAULT_KIND, DEFAULT_TARGET_RECALL, KINDS

log = logging.getLogger("edge-train")


class CleanErrors(click.Group):
    """Turn expected failures and usage mistakes into one-line errors (exit status 2)
    instead of tracebacks or click's usage block, as ``edge-detect`` does."""

    def invoke(self, ctx: click.Context):
        from edge_runtime.manifest import ManifestError
        from export.download import DownloadError

        try:
            return super().invoke(ctx)
        except (DownloadError, ManifestError, OSError, ValueError) as exc:
            click.echo(f"edge-train: error: {one_line(exc)}", err=True)
            sys.exit(2)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare edge-train: the help
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:  # bad option values: one line
            click.echo(f"edge-train: error: {' '.join(exc.format_message().split())}",
                       err=True)
            sys.exit(2)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:  # Ctrl-C
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=CleanErrors, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """edge-detect workbench."""
    logs.setup(verbose)


@main.command("fetch-weights")
@click.option("--backbone", type=click.Choice(["cnn14", "mn04"]), default="cnn14",
              show_default=True)
@click.option("--url", help="Mirror URL (http(s):// or file://) instead of the official one.")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to store it in [default: $EDGE_DETECT_CACHE/weights or "
                   "~/.cache/edge-detect/weights].")
def fetch_weights(backbone: str, url: str | None, dest: Path | None) -> None:
    """Download an official checkpoint with resume and sha256 check."""
    from export import weights

    path = weights.fetch(backbone, url=url, dest_dir=dest)
    click.echo(str(path))


@main.command("init-weights")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def init_weights(out: Path, seed: int) -> None:
    """Write seeded random-init Cnn14 weights in the official {"model": ...} format.

    For parity, plumbing and benchmarks only: an untrained network, no quality claim.
    """
    import torch

    from edge_runtime import atomic
    from export.cnn14 import random_state_dict

    state = {"model": random_state_dict(seed)}
    atomic.write_with(out, lambda tmp: torch.save(state, tmp))
    click.echo(str(out))


@main.command("export")
@click.option("--weights", required=True,
              help="Checkpoint path, or a fetched name (cnn14, mn04).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models_onnx"), show_default=True)
@click.option("--backbone", type=click.Choice(BACKBONE_CHOICES), default="auto",
              show_default=True)
@click.option("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS, show_default=True,
              help="Streaming hop: the backbone runs once per chunk.")
@click.option("--window-chunks", type=int, default=DEFAULT_WINDOW_CHUNKS, show_default=True,
              help="Chunks pooled into one window (5 x 1 s = 5 s).")
def export_cmd(weights: str, out: Path, backbone: str, chunk_seconds: float,
               window_chunks: int) -> None:
    """Export backbone, pooling and AudioSet head to ONNX with a manifest."""
    from export.onnx_export import export_log
    from export.pipeline import export_from_checkpoint

    manifest = export_from_checkpoint(weights, out, backbone=backbone,
                                      chunk_seconds=chunk_seconds, window_chunks=window_chunks)
    for role, entry in manifest.files.items():
        click.echo(f"{role:9s} {entry.path:14s} {entry.bytes / 1e6:8.1f} MB  "
                   f"{entry.sha256[:16]}")
    click.echo(f"export seconds: {export_log(out).get('export_seconds')}")


@main.command("fetch-esc50")
@click.option("--dest", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the archive and the unpacked ESC-50/ [default: "
                   "$EDGE_DETECT_CACHE/data or ~/.cache/edge-detect/data].")
@click.option("--url", help="Mirror URL (http(s):// or file://) instead of the official one.")
@click.option("--sha256", help="Expected archive sha256 (upstream publishes none).")
def fetch_esc50_cmd(dest: Path | None, url: str | None, sha256: str | None) -> None:
    """Download the official ESC-50 archive (resumable) and unpack it; prints its folder."""
    from export.weights import cache_root
    from training.fetch_esc50 import ESC50_URL, fetch_esc50

    dest = dest or cache_root() / "data"
    target = fetch_esc50(dest, url or ESC50_URL, sha256)
    click.echo(str(target))


@main.command("build")
@click.option("--weights", help="Checkpoint path or fetched name (cnn14, mn04); omit to reuse "
                                "the export already in --out.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="ESC-50 layout: audio/ and meta/esc50.csv.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models_onnx"), show_default=True)
@click.option("--classifier", type=click.Choice(KINDS), default=DEFAULT_KIND,
              show_default=True, help="Which pipeline to export (all three are evaluated).")
@click.option("--mapping", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML with danger = [...] and safe = [...] ESC-50 categories.")
@click.option("--backbone", type=click.Choice(BACKBONE_CHOICES), default="auto",
              show_default=True)
@click.option("--target-recall", type=float, default=DEFAULT_TARGET_RECALL, show_default=True,
              help="Operating threshold: lowest false alarms with danger recall at least this.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--per-fold-limit", type=int, help="At most N clips per category and fold.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS),
              help="onnxruntime threads for embedding.")
@click.option("--no-offline-check", is_flag=True,
              help="Skip the streamed-vs-offline embedding comparison (halves embedding time).")
@click.option("--extra", "extras", multiple=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Extra labelled folder (labels.csv: file,label,category[,fold]); repeatable.")
@click.option("--hold-out-fold", "hold_out_folds", multiple=True,
              help="Leave this fold of the --extra folders out of training (to evaluate on it); "
                   "'none' leaves out their rows without a fold. Repeatable.")
@click.option("--no-negatives", is_flag=True,
              help="No synthetic negatives (silence, noise, tones, music, espeak-ng speech).")
@click.option("--mixes", type=click.IntRange(0, 8), default=1, show_default=True,
              help="Mixes of each danger clip into a safe background (random SNR 0-15 dB).")
def build_cmd(weights: str | None, data: Path, out: Path, classifier: str, mapping: Path | None,
              backbone: str, target_recall: float, seed: int, per_fold_limit: int | None,
              threads: int | None, no_offline_check: bool, extras: tuple[Path, ...],
              hold_out_folds: tuple[str, ...], no_negatives: bool, mixes: int) -> None:
    """Export, embed, fold-CV, fit and export the classifier (+ end-to-end ONNX)."""
    from training.build import build

    report = build(data, out, weights, classifier=classifier, mapping=mapping,
                   backbone=backbone, target_recall=target_recall, seed=seed,
                   per_fold_limit=per_fold_limit, threads=threads,
                   measure_offline=not no_offline_check, extras=extras,
                   hold_out_folds=hold_out_folds, negatives=not no_negatives, mixes=mixes)
    click.echo(report["markdown"])
    from edge_runtime.manifest import load_manifest

    click.echo(f"model dir: {out}  (model id {load_manifest(out).model_id()[:12]}, "
               f"seconds: {report['seconds']})")


@main.command("quantize")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="fp32 model dir (manifest.json + ONNX files).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of real audio for calibration and the held-out check (recursive).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="New model dir for the int8 model.")
@click.option("--calib-files", type=int, default=64, show_default=True)
@click.option("--check-files", type=int, default=16, show_default=True,
              help="Held-out files (never calibrated on) for the cosine check.")
def quantize_cmd(model_dir: Path, data: Path, out: Path, calib_files: int,
                 check_files: int) -> None:
    """Static int8 (QDQ, per-channel) backbone, front end float; refuses a model that drifts."""
    from training.quantize import quantize_model_dir

    manifest = quantize_model_dir(model_dir, data, out, calib_files=calib_files,
                                  check_files=check_files)
    q = manifest.quantization
    click.echo(f"int8 vs fp32 cosine on {q['check']['windows']} held-out windows: mean "
               f"{q['check']['mean_cosine']:.4f}, min {q['check']['min_cosine']:.4f}")
    if q["classifier_cv"]:
        for row in ("fp32", "int8", "int8_with_fp32_classifier"):
            r = q["classifier_cv"][row]
            click.echo(f"{row:26s} acc@0.5 {r['accuracy_at_0.5']:.4f}  AUC {r['roc_auc']:.4f}  "
                       f"acc@t {r['accuracy_at_threshold']:.4f}")
    for role, entry in manifest.files.items():
        click.echo(f"{role:10s} {entry.path:16s} {entry.bytes / 1e6:8.1f} MB")
    click.echo(f"model dir: {out}")


@main.command("bundle")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Model dir (manifest.json + ONNX files).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Archive to write (.tar.gz); its sha256 goes beside it (.sha256).")
@click.option("--name", help="Folder inside the archive [default: <backbone>-<model id>].")
def bundle_cmd(model_dir: Path, out: Path, name: str | None) -> None:
    """One archive of exactly the files the device loads, with SHA256SUMS."""
    from training.bundle import bundle

    info = bundle(model_dir, out, name)
    for role, entry in info["files"].items():
        click.echo(f"{role:10s} {entry['path']:16s} {entry['bytes'] / 1e6:8.2f} MB")
    click.echo(f"{info['archive']}: {info['bytes'] / 1e6:.2f} MB "
               f"({info['unpacked_bytes'] / 1e6:.2f} MB unpacked), "
               f"sha256 {info['sha256'][:16]}, model {info['model_id'][:12]}")
    click.echo(f"device: tar -xzf {out.name} && cd {info['folder']} && sha256sum -c SHA256SUMS")


# --- stream-eval / robustness (issue 6) -----------------------------------------------------

@main.command("stream-eval")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Built model dir (edge-train build output).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="ESC-50 layout the model was built from.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder [default: <model>/.workbench/stream-eval].")
@click.option("--classifier", type=click.Choice(KINDS),
              help="Classifier kind [default: the manifest's].")
@click.option("--per-fold-limit", type=int, help="At most N clips per category and fold.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), help="onnxruntime threads.")
@click.option("--no-daemon", is_flag=True, help="Skip the edge-detect subprocess runs.")
def stream_eval_cmd(model_dir: Path, data: Path, out: Path | None, classifier: str | None,
                    per_fold_limit: int | None, threads: int | None, no_daemon: bool) -> None:
    """Fold CV through the device path: Detector.predict and the edge-detect daemon."""
    from training.stream_eval import stream_eval

    report = stream_eval(model_dir, data, out, kind=classifier, per_fold_limit=per_fold_limit,
                         threads=threads, run_daemon=not no_daemon)
    click.echo(report["markdown"])
    click.echo(f"seconds: {report['seconds']}")


@main.command("robustness")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Built model dir (edge-train build output).")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="ESC-50 layout the model was built from.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for robustness.json and robustness.md.")
@click.option("--classifier", type=click.Choice(KINDS),
              help="Classifier kind [default: the manifest's].")
@click.option("--fold", "folds", type=int, multiple=True,
              help="Held-out fold(s) to build test sets from [default: every fold].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), help="onnxruntime threads.")
@click.option("--window-only", is_flag=True,
              help="Score with window decisions only (training's rule), not the default "
                   "window + chunk decisions.")
def robustness_cmd(model_dir: Path, data: Path, out: Path, classifier: str | None,
                   folds: tuple[int, ...], seed: int, threads: int | None,
                   window_only: bool) -> None:
    """Held-out mixes, gain changes, noise and synthetic sounds through the Detector."""
    from training.robustness import robustness

    report = robustness(model_dir, data, out, kind=classifier, folds=list(folds) or None,
                        seed=seed, threads=threads, window_only=window_only)
    click.echo(report["markdown"])
    click.echo(f"seconds: {report['seconds']}")


# --- open-world evaluation and calibration (issue 10) ---------------------------------------

@main.command("evaluate")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Model dir to evaluate.")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              required=True, help="Labelled folder (labels.csv file,label,category[,fold], or "
                                  "an ESC-50 layout); repeatable.")
@click.option("--fold", metavar="N|none",
              help="Only this fold's clips (e.g. the held-out UrbanSound8K fold); 'none': only "
                   "the rows without a fold.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder [default: <model>/.workbench/evaluate].")
@click.option("--threads", type=int, help="onnxruntime threads.")
def evaluate_cmd(model_dir: Path, data: tuple[Path, ...], fold: str | None, out: Path | None,
                 threads: int | None) -> None:
    """Open-world evaluation through the daemon's own path (a file is flagged if an event
    names it): per-category recall / false alarms, class confusion, false events per hour."""
    from training.openworld_eval import evaluate_openworld

    report = evaluate_openworld(model_dir, list(data), out, fold=fold, threads=threads)
    click.echo(report["markdown"])
    click.echo(f"report: {report['out']}  (seconds: {report['seconds']})")


@main.command("synth-home")
@click.option("--out", type=Path, required=True,
              help="Folder for labels.csv and audio/ (created; files already there are reused).")
@click.option("--minutes", type=float, default=60.0, show_default=True,
              help="Audio to make, in minutes.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--file-minutes", type=float, default=10.0, show_default=True,
              help="Longest file, in minutes.")
def synth_home_cmd(out: Path, minutes: float, seed: int, file_minutes: float) -> None:
    """Hours of synthetic home audio (speech, TV, music, appliances, household events), labelled
    safe, for false events per hour: evaluate it with 'edge-train evaluate --data OUT'."""
    from training.household import synth_home

    info = synth_home(out, minutes=minutes, seed=seed, file_minutes=file_minutes)
    click.echo(f"{info['files']} files ({info['written']} written, {info['reused']} reused), "
               f"{info['audio_minutes']:.1f} min, {info['bytes'] / 1e6:.1f} MB; "
               f"{info['source']}")
    click.echo(f"labels: {Path(info['out']) / 'labels.csv'}  (seconds: {info['seconds']})")


@main.command("place")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Labelled folder (labels.csv or ESC-50 layout) whose clips are placed.")
@click.option("--fold", help="Only this fold of --data ('none': the clips without a fold).")
@click.option("--ambience", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              required=True, help="Safe recordings to place them in (a folder's safe rows or "
                                  "every audio file); repeatable.")
@click.option("--out", type=Path, required=True, help="Folder for labels.csv and audio/.")
@click.option("--snr-db", type=click.FloatRange(-30, 60), default=10.0, show_default=True,
              help="Clip's active power over the ambience's mean power, dB.")
@click.option("--seconds", type=click.FloatRange(3, 600), default=20.0, show_default=True,
              help="Length of each file.")
@click.option("--seed", type=int, default=0, show_default=True)
def place_cmd(data: Path, fold: str | None, ambience: tuple[Path, ...], out: Path,
              snr_db: float, seconds: float, seed: int) -> None:
    """Clips placed at random offsets inside longer real ambience (a labelled folder for
    'edge-train evaluate --data OUT'): recall as a home hears the sound, not the clip alone."""
    from training.in_ambience import place_in_ambience

    info = place_in_ambience(data, list(ambience), out, fold=fold, snr_db=snr_db,
                             seconds=seconds, seed=seed)
    click.echo(f"{info['clips']} clips placed in {info['ambiences']} ambience recording(s), "
               f"{info['skipped']} left out; labels: {Path(info['out']) / 'labels.csv'}  "
               f"(seconds: {info['seconds']})")


@main.command("calibrate")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, help="Model dir whose thresholds are calibrated (manifest updated).")
@click.option("--ambience", type=click.Path(file_okay=False, path_type=Path), multiple=True,
              required=True, help="Safe recordings: every audio file in the folder, or the safe "
                                  "rows of its labels.csv; repeatable.")
@click.option("--budget-per-hour", type=click.FloatRange(min=0), default=0.5, show_default=True,
              help="False events per hour allowed on the ambience (all classes together).")
@click.option("--danger", type=click.Path(file_okay=False, path_type=Path),
              help="Labelled folder of held-out danger clips: recall before and after.")
@click.option("--fold", type=int, help="--danger: only this fold (one the model never saw).")
@click.option("--min-threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Let thresholds come down to this (one already lower is not raised) "
                   "[default: none: calibration only raises thresholds].")
@click.option("--lower", "lower", multiple=True, metavar="CLASS",
              help="With --min-threshold: only this class may come down (repeatable) "
                   "[default: every class].")
@click.option("--dry-run", is_flag=True, help="Report only; leave the manifest as it is.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder [default: <model>/.workbench/calibrate].")
@click.option("--threads", type=int, help="onnxruntime threads.")
def calibrate_cmd(model_dir: Path, ambience: tuple[Path, ...], budget_per_hour: float,
                  danger: Path | None, fold: int | None, min_threshold: float | None,
                  lower: tuple[str, ...], dry_run: bool, out: Path | None,
                  threads: int | None) -> None:
    """Thresholds from a false-alarm budget: replay long safe recordings through the daemon's
    path, pick each class's threshold, report the recall it costs, write the manifest."""
    from training.calibrate import calibrate

    report = calibrate(model_dir, list(ambience), budget_per_hour=budget_per_hour,
                       danger=danger, fold=fold, min_threshold=min_threshold, lower=lower,
                       threads=threads,
                       write=not dry_run, out=out)
    click.echo(report["markdown"])
    click.echo(f"report: {report['out']}  (seconds: {report['seconds']})")


if __name__ == "__main__":
    main()
