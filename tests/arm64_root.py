"""An emulated arm64 Debian root (debootstrap + qemu-user-static) for the aarch64 device test.

The root is built once and cached under ``~/.cache/edge-detect/arm64-root/<KEY>`` (``KEY`` names
the suite and the packages; bump ``VERSION`` to rebuild), so CI reruns only reinstall the project.
Every step that the sandbox may not allow (not root, no debootstrap/qemu, no binfmt_misc, no
mirror) is reported by :class:`Unavailable` with the reason; the test turns it into a skip.

``python -m tests.arm64_root`` builds (or checks) the cached root and prints its path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

VERSION = "1"
ARCH = "arm64"
# python3-venv for the runtime's venv, ca-certificates for pip's HTTPS; nothing else: the
# runtime's own libraries (onnxruntime, libsndfile in soundfile, soxr) come in PyPI wheels.
PACKAGES = ("python3", "python3-venv", "ca-certificates")
CACHE = Path(os.environ.get("EDGE_DETECT_CACHE") or Path.home() / ".cache" / "edge-detect")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
VENV = "/opt/edge-detect"  # inside the root
MARK = ".edge-detect-root.json"
HOST_CA = "/etc/ssl/host-ca-bundle.crt"  # inside the root
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
              "PIP_DEFAULT_TIMEOUT": "120"}


class Unavailable(RuntimeError):
    """This machine cannot build or enter an emulated arm64 root; the message says why."""


def debian_mirror() -> tuple[str, str]:
    """(mirror URL, suite) of the first plain Debian archive in the host's apt sources."""
    sources = Path("/etc/apt")
    texts = [p.read_text(errors="replace") for p in
             [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*"))]
             if p.is_file() and p.suffix in (".list", ".sources")]
    for text in texts:
        for block in re.split(r"\n\s*\n", text):  # deb822 stanzas
            uris = re.search(r"^URIs:\s*(\S+)", block, re.M)
            suites = re.search(r"^Suites:\s*(\S+)", block, re.M)
            if uris and suites and "/debian" in uris[1] and "security" not in uris[1]:
                return uris[1].rstrip("/"), suites[1]
        for line in text.splitlines():  # one-line format
            match = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
            if match and "/debian" in match[1] and "security" not in match[1]:
                return match[1].rstrip("/"), match[2]
    return "http://deb.debian.org/debian", "bookworm"


def reachable(url: str, timeout: float = 15.0) -> str | None:
    """None if ``url`` answers, else the reason."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return None
    except OSError as exc:
        return f"{url} unreachable ({exc})"


def ensure_binfmt() -> None:
    """Make sure the kernel runs aarch64 ELF files through qemu (mount, register if needed)."""
    entry = BINFMT / "qemu-aarch64"
    if not (BINFMT / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
                       capture_output=True, timeout=30)
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True,
                       timeout=30)
    if not entry.exists():
        raise Unavailable(f"binfmt_misc has no qemu-aarch64 entry ({entry}); install "
                          "qemu-user-static and binfmt-support, and mount binfmt_misc")
    if entry.read_text().splitlines()[0].strip() != "enabled":
        raise Unavailable(f"{entry} is disabled (update-binfmts --enable qemu-aarch64)")


def check_host() -> tuple[str, str]:
    """Raise Unavailable unless this machine can build the root; returns (mirror, suite)."""
    if os.name != "posix" or os.geteuid() != 0:
        raise Unavailable("needs root (chroot, mount, debootstrap)")
    for tool in ("debootstrap", "qemu-aarch64-static", "chroot"):
        if not shutil.which(tool):
            raise Unavailable(f"{tool} not found (apt-get install debootstrap qemu-user-static "
                              "binfmt-support)")
    ensure_binfmt()
    mirror, suite = debian_mirror()
    why = reachable(f"{mirror}/dists/{suite}/Release")
    if why:
        raise Unavailable(f"Debian mirror: {why}")
    return mirror, suite


def root_key(suite: str) -> str:
    return f"{suite}-{ARCH}-v{VERSION}"


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    prefix = str(root.resolve())
    points = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(inside, key=len, reverse=True)


def unmount_all(root: Path) -> None:
    for point in mounts_under(root):
        if subprocess.run(["umount", point], capture_output=True, timeout=60).returncode:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
    if mounts_under(root):
        raise RuntimeError(f"could not unmount {mounts_under(root)}")


def remove_root(root: Path) -> None:
    """Delete a root; refuses while anything is mounted inside it (never touch the host's /dev)."""
    if root.exists():
        unmount_all(root)
        subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True, timeout=600)


@contextlib.contextmanager
def proc_mounted(root: Path):
    """/proc inside the root for the duration (python and pip need it), unmounted after.

    /sys is deliberately not mounted: with the x86 host's sysfs visible, onnxruntime's cpuinfo
    took it for the aarch64 CPU's and edge-detect died with SIGSEGV under qemu-user (seen);
    without it cpuinfo logs that it cannot parse the CPU lists and onnxruntime carries on.
    """
    target = root / "proc"
    target.mkdir(exist_ok=True)
    mounted = not subprocess.run(["mount", "-t", "proc", "proc", str(target)],
                                 capture_output=True, timeout=30).returncode
    try:
        yield
    finally:
        if mounted:
            unmount_all(root)


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts (``PIP_CERT``, else the system bundle)."""
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def chroot_env(root: Path) -> dict[str, str]:
    """A clean environment for the root, with the host's network trust: its CA bundle (a
    TLS-inspecting proxy's CA lives there on some CI machines) and its PyPI mirror, if set."""
    env = dict(CHROOT_ENV)
    bundle = host_ca_bundle()
    if bundle is not None:
        target = root / HOST_CA.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)  # a root without ca-certificates yet
        shutil.copy2(bundle, target)
        env["PIP_CERT"] = HOST_CA
    for key in ("PIP_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
                "NO_PROXY", "no_proxy"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def chroot(root: Path, *argv: str, timeout: float,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the root (aarch64 binaries through binfmt/qemu), clean environment."""
    env = chroot_env(root)
    with proc_mounted(root):
        res = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True,
                             timeout=timeout, env=env)
    if check and res.returncode:
        tail = (res.stdout + res.stderr)[-3000:]
        raise RuntimeError(f"in arm64 root: {' '.join(argv)} exited {res.returncode}:\n{tail}")
    return res


def bootstrap(root: Path, mirror: str, suite: str, log=print) -> None:
    """Both debootstrap stages: download on the host, configure under emulation."""
    t0 = time.monotonic()
    res = subprocess.run(["debootstrap", f"--arch={ARCH}", "--foreign", "--variant=minbase",
                          f"--include={','.join(PACKAGES)}", suite, str(root), mirror],
                         capture_output=True, text=True, timeout=900)
    if res.returncode:
        tail = (res.stdout + res.stderr)[-2000:]
        if re.search(r"Failed getting release file|Couldn't download|resolve", tail):
            raise Unavailable(f"debootstrap could not download from {mirror}: {tail[-300:]}")
        raise RuntimeError(f"debootstrap first stage failed:\n{tail}")
    log(f"first stage {time.monotonic() - t0:.0f} s")
    shutil.copy2(shutil.which("qemu-aarch64-static"), root / "usr/bin/qemu-aarch64-static")
    t0 = time.monotonic()
    try:
        chroot(root, "/debootstrap/debootstrap", "--second-stage", timeout=1800)
    except RuntimeError as exc:
        log_file = root / "debootstrap/debootstrap.log"
        extra = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
        raise RuntimeError(f"{exc}\n{extra}") from exc
    log(f"second stage {time.monotonic() - t0:.0f} s")
    shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
    chroot(root, "python3", "-m", "venv", VENV, timeout=600)
    chroot(root, "apt-get", "clean", timeout=300)


def arm64_root(log=print) -> Path:
    """The cached arm64 root (built on first use); raises Unavailable where it cannot be."""
    mirror, suite = check_host()
    base = CACHE / "arm64-root"
    base.mkdir(parents=True, exist_ok=True)
    root = base / root_key(suite)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / MARK).is_file():
            shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
            return root
        for stale in base.iterdir():  # half-built or older versions
            if stale.is_dir() and stale != root:
                remove_root(stale)
        work = base / f"{root.name}.partial"
        remove_root(work)
        remove_root(root)
        t0 = time.monotonic()
        bootstrap(work, mirror, suite, log)
        info = {"suite": suite, "mirror": mirror, "packages": list(PACKAGES),
                "build_s": round(time.monotonic() - t0, 1), "bytes": tree_bytes(work)}
        (work / MARK).write_text(json.dumps(info, indent=2) + "\n")
        work.rename(root)
        return root


def tree_bytes(path: Path) -> int:
    """Bytes on disk under ``path`` (du -sb), one file system."""
    out = subprocess.run(["du", "-sbx", str(path)], capture_output=True, text=True, check=True,
                         timeout=300).stdout
    return int(out.split()[0])


if __name__ == "__main__":
    print(arm64_root())
