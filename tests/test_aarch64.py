"""The device runtime on aarch64: an emulated arm64 Debian (debootstrap + qemu-user-static).

In the cached arm64 root (``tests.arm64_root``): ``pip install .`` of the runtime only (no
extras; onnxruntime, numpy, soundfile, soxr, sounddevice, click as aarch64 wheels from PyPI),
then the mn04 device bundle (``edge-train bundle``) is unpacked and checked there with ``tar``
and ``sha256sum -c``, and ``edge-detect --once`` runs on a directory holding one dog clip the
classifier never saw: the event must be logged. Timing under emulation means nothing; that it
installs and detects does. The installed size is printed and written to
``~/.cache/edge-detect/arm64-root/last-run.json``.

Skipped (with the reason) where the machine cannot do it: not root, no debootstrap/qemu,
binfmt_misc unavailable, the Debian mirror or PyPI unreachable.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import arm64_root as arm
from tests.helpers import REPO, unseen_clips

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "edge_runtime", "export", "training", "benchmarks")
PROJECT_DEPS = ("onnxruntime", "numpy", "soundfile", "soxr", "sounddevice", "click")
WORKBENCH_ONLY = ("torch", "sklearn", "librosa", "onnx", "skl2onnx", "matplotlib")


@pytest.fixture(scope="module")
def root() -> Path:
    try:
        path = arm.arm64_root(log=lambda msg: print(f"arm64 root: {msg}"))
    except arm.Unavailable as exc:
        pytest.skip(f"no emulated arm64 root on this machine: {exc}")
    why = arm.reachable("https://pypi.org/simple/onnxruntime/")
    if why:
        pytest.skip(f"PyPI: {why}")
    return path


def unseen_dog(esc10_dir: Path, limit: int = 2) -> Path:
    """A dog clip outside the per-fold-limited training set of ``mn04_model_dir``."""
    from training.mapping import binary_mapping

    return unseen_clips(esc10_dir, binary_mapping(), "dog", limit, 1)[0]


def copy_sources(dest: Path) -> None:
    dest.mkdir(parents=True)
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__",
                                                                              "results"))
        else:
            shutil.copy2(src, dest / name)


def test_runtime_installs_and_detects_a_dog_on_aarch64(root: Path, mn04_model_dir: Path,
                                                        esc10_dir: Path,
                                                        tmp_path: Path) -> None:
    from training.bundle import bundle

    work = root / "tmp" / f"edge-test-{tmp_path.name}"
    inside = f"/tmp/{work.name}"
    arm.remove_root(work) if work.exists() else None
    try:
        copy_sources(work / "src")
        info = bundle(mn04_model_dir, work / "mn04.tar.gz")
        (work / "in").mkdir()
        clip = unseen_dog(esc10_dir)
        shutil.copy2(clip, work / "in" / clip.name)

        machine = arm.chroot(root, "uname", "-m", timeout=60).stdout.strip()
        assert machine == "aarch64"
        pip = arm.chroot(root, f"{arm.VENV}/bin/pip", "install", "--no-cache-dir",
                         "--progress-bar", "off", f"{inside}/src", timeout=1500)
        assert "Successfully installed" in pip.stdout, pip.stdout[-2000:]

        # the device procedure: unpack, check every file, run
        arm.chroot(root, "tar", "-xzf", f"{inside}/mn04.tar.gz", "-C", inside, timeout=120)
        sums = arm.chroot(root, "sh", "-c", f"cd {inside}/{info['folder']} && "
                                            "sha256sum -c SHA256SUMS", timeout=120)
        assert sums.stdout.count(": OK") == len(info["files"]) + 1, sums.stdout

        have = arm.chroot(root, f"{arm.VENV}/bin/python", "-c",
                          "import importlib.util as u, json, platform; print(json.dumps("
                          "{m: bool(u.find_spec(m)) for m in "
                          f"{list(PROJECT_DEPS + WORKBENCH_ONLY)!r}}}))", timeout=300)
        found = json.loads(have.stdout.strip().splitlines()[-1])
        assert all(found[m] for m in PROJECT_DEPS), found
        assert not any(found[m] for m in WORKBENCH_ONLY), found  # runtime only, no extras

        events = f"{inside}/events.jsonl"
        res = arm.chroot(root, f"{arm.VENV}/bin/edge-detect", "--model",
                         f"{inside}/{info['folder']}", "--input", f"{inside}/in", "--once",
                         "--events", events, "--threads", "1", timeout=900, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "DANGER #1 started" in res.stderr, res.stderr[-3000:]
        records = [json.loads(line) for line in
                   (root / events.lstrip("/")).read_text().splitlines()]
        assert len(records) >= 1, res.stderr[-3000:]
        assert records[0]["source"].endswith(clip.name)
        assert records[0]["model_sha256"] == info["model_id"]
        names = {t["name"] for t in records[0].get("tags", [])}
        assert names & {"Dog", "Bark", "Animal", "Domestic animals, pets"}, records[0]

        size = {"venv_bytes": arm.tree_bytes(root / arm.VENV.lstrip("/")),
                "root_bytes": arm.tree_bytes(root) - arm.tree_bytes(work),
                "bundle_bytes": info["bytes"], "bundle_unpacked_bytes": info["unpacked_bytes"],
                "site_packages": site_packages(root)}
        (root.parent / "last-run.json").write_text(json.dumps(size, indent=2) + "\n")
        print(f"aarch64: venv {size['venv_bytes'] / 1e6:.0f} MB, root "
              f"{size['root_bytes'] / 1e6:.0f} MB, bundle {info['bytes'] / 1e6:.1f} MB; "
              f"event p={records[0]['peak_probability']}")
    finally:
        arm.remove_root(work)


def site_packages(root: Path) -> dict[str, int]:
    """Bytes per top-level entry of the venv's site-packages (largest first, ≥ 0.5 MB)."""
    lib = next((root / arm.VENV.lstrip("/") / "lib").glob("python3*/site-packages"))
    sizes = {p.name: arm.tree_bytes(p) for p in lib.iterdir()}
    return dict(sorted(((k, v) for k, v in sizes.items() if v >= 500_000),
                       key=lambda kv: -kv[1]))


def test_debian_mirror_is_read_from_apt_sources() -> None:
    mirror, suite = arm.debian_mirror()
    assert mirror.startswith(("http://", "https://", "file:/")), mirror
    assert suite and "/" not in suite


def test_removing_a_root_refuses_while_something_is_mounted(tmp_path: Path) -> None:
    """The cache cleanup must never delete through a mount (e.g. a bound /dev)."""
    if not Path("/proc/mounts").is_file():
        pytest.skip("no /proc/mounts")
    assert arm.mounts_under(tmp_path) == []
    arm.remove_root(tmp_path / "absent")  # nothing there: no error
    (tmp_path / "r" / "x").mkdir(parents=True)
    arm.remove_root(tmp_path / "r")
    assert not (tmp_path / "r").exists()
    # a real mount inside must be unmounted before removal (needs root to test)
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        return
    target = tmp_path / "m" / "proc"
    target.mkdir(parents=True)
    subprocess.run(["mount", "-t", "proc", "proc", str(target)], check=True)
    assert arm.mounts_under(tmp_path / "m") == [str(target.resolve())]
    arm.remove_root(tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert Path("/proc/self/status").is_file()
