"""Network audio (RTSP, HTTP(S), any URL ffmpeg reads) decoded to PCM by an ffmpeg subprocess.

ffmpeg does the protocol and the codec and writes float32 mono at the model rate to a pipe;
this module reads that pipe. One connection is one :class:`Stream`; it ends when the stream
ends, ffmpeg exits, or no bytes arrive for ``stall_s`` seconds (ffmpeg is then killed). The
reconnect loop with backoff is :func:`edge_runtime.live.supervise`'s job.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np

from edge_runtime import audio as audio_io
from edge_runtime.ffmpeg_file import drain_lines, floats_from, without_context
from edge_runtime.sources import Stream
from edge_runtime.text import printable

log = logging.getLogger("edge-detect")

URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class SourceError(RuntimeError):
    """A live source that cannot be opened now (one line; the caller retries)."""


class FfmpegMissing(ValueError):
    """ffmpeg is not installed: retrying cannot help (one line, exit status 2)."""


class UnknownProtocol(ValueError):
    """ffmpeg has no such protocol (a typo in the URL): retrying cannot help."""


# what ffmpeg says when a stream has no audio stream to decode (a camera with audio off)
NO_AUDIO = ("does not contain any stream", "matches no streams")


def is_url(spec: str) -> bool:
    """``rtsp://…``, ``http(s)://…``, ``udp://…``… — anything with a scheme."""
    return bool(URL_RE.match(spec))


def redact(url: str) -> str:
    """Text with every URL's password hidden (``rtsp://user:secret@cam`` →
    ``rtsp://user:***@cam``); also used on ffmpeg's messages, which repeat the URL."""
    # up to the last '@' before the path: ffmpeg splits user:password@host there, so an
    # unencoded '@' in the password is still part of it
    return printable(re.sub(r"([A-Za-z][\w+.-]*://[^:/@\s]*):[^/\s]*@", r"\1:***@", url))


def ffmpeg_command(url: str, rate: int, stall_s: float) -> list[str]:
    """ffmpeg reading ``url`` and writing raw float32 mono at ``rate`` to stdout."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FfmpegMissing("ffmpeg is not installed (apt-get install ffmpeg); it decodes "
                            "network sources")
    timeout_us = str(int(max(1.0, stall_s) * 1e6))
    args = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-analyzeduration", "1000000"]
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("http", "https"):
        args += ["-rw_timeout", timeout_us, "-reconnect", "0"]
    elif scheme in ("rtsp", "rtsps"):
        args += ["-rtsp_transport", "tcp", "-timeout", timeout_us]
    return args + ["-i", url, "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(rate),
                   "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]


# An http(s) URL whose audio arrived this much faster than real time, then ended, and which
# the server states a length for (Content-Length) is a recording (a file on a web server), not
# a live stream: it is read once, never re-read on "reconnect". A live stream can burst its
# backlog at connect too, but has no length (and a stopped server answers nothing).
RECORDING_SPEED = 2.0


def has_length(url: str, timeout_s: float = 5.0) -> bool:
    """Whether ``url`` is a recording of known length: a ``file://`` path to a regular file,
    or an http(s) server that states a Content-Length (a HEAD request; credentials in the URL
    are sent as Basic authentication, as ffmpeg does)."""
    import base64
    import urllib.parse
    import urllib.request

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme == "file":
        return os.path.isfile(urllib.parse.unquote(parts.path))
    if scheme not in ("http", "https"):
        return False
    try:
        headers = {}
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            netloc = host + (f":{parts.port}" if parts.port else "")
            url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        request = urllib.request.Request(url, method="HEAD", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:  # noqa: S310
            return int(reply.headers.get("Content-Length") or 0) > 0
    except (OSError, ValueError):
        return False


def url_stream(url: str, target_rate: int, stop: threading.Event, name: str | None = None,
               stall_s: float = 10.0, block_s: float = 0.1, once: bool = False) -> Stream:
    """Start ffmpeg on ``url``; the stream's blocks are float32 mono at ``target_rate``.

    When it ends, ``stream.finished`` says not to reopen it: with ``once``, or when its audio
    came faster than real time from a server that states its length (``RECORDING_SPEED``: a
    recording, which a reopen would only read again, reporting its events twice). Raises
    :class:`SourceError` when ffmpeg cannot be started or produces no audio within ``stall_s``
    (the caller retries with backoff)."""
    shown = name or redact(url)
    try:
        proc = subprocess.Popen(ffmpeg_command(url, target_rate, stall_s),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise SourceError(f"cannot start ffmpeg ({exc})") from None
    tail: collections.deque[str] = collections.deque(maxlen=5)
    drainer = threading.Thread(target=drain_lines, daemon=True,
                               args=(proc.stderr, tail, lambda line: redact(without_context(line))),
                               name=f"ffmpeg-stderr {shown}")
    drainer.start()
    fd = proc.stdout.fileno()
    want = max(4, int(block_s * target_rate) * 4)
    decoded = audio_io.Decoded(sample_rate=target_rate, channels=1)
    stream = Stream(shown, False, datetime.now(UTC), iter(()), decoded)

    def stop_ffmpeg() -> None:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        proc.stdout.close()
        drainer.join(timeout=2)

    def read_some(deadline_s: float) -> bytes | None:
        """Bytes, b'' at end of stream, None on a stall or stop."""
        waited = 0.0
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                return os.read(fd, want)
            waited += 0.2
            if waited >= deadline_s:
                return None
        return None

    first = read_some(stall_s)
    if not first:
        stop_ffmpeg()
        if stop.is_set():
            return stream
        why = "; ".join(tail) or (f"no audio within {stall_s:.0f} s" if first is None
                                  else "stream ended at once")
        if "Protocol not found" in why:
            raise UnknownProtocol(f"{shown}: ffmpeg knows no protocol {url.split(':', 1)[0]!r}"
                                  " (rtsp://, rtsps://, http://, https://, udp://, rtp://, "
                                  "srt://, tcp://, …)")
        if any(text in why for text in NO_AUDIO):
            why = "it has no audio track: is the camera's audio (microphone) turned off?"
        raise SourceError(f"cannot read the stream ({why})")
    # its first sample: what arrived now, not when ffmpeg started (connecting and probing a
    # camera take seconds, which dated every event that much early)
    stream.base_time = datetime.now(UTC) - timedelta(seconds=len(first) / 4 / target_rate)
    log.info("%s: connected (ffmpeg pid %d) → %d Hz", shown, proc.pid, target_rate)

    def blocks() -> Iterator[np.ndarray]:
        leftover = b""
        data: bytes | None = first
        started = time.monotonic()
        try:
            while data:
                block, leftover = floats_from(leftover + data, decoded)
                if block.size:
                    yield block
                data = read_some(stall_s)
            if data is None and not stop.is_set():
                decoded.problem = f"no audio for {stall_s:.0f} s (stalled)"
            elif not stop.is_set():
                why = "; ".join(tail)
                decoded.problem = "stream ended" + (f" ({why})" if why else "")
                wall_s = time.monotonic() - started
                audio_s = decoded.frames_in / target_rate
                if audio_s > RECORDING_SPEED * wall_s + 1.0 and has_length(url):
                    decoded.problem = (f"recording read to its end ({audio_s:.1f} s of audio "
                                       f"in {wall_s:.1f} s)")
                    stream.finished = True
                elif wall_s < 1.0:
                    decoded.problem += " after less than 1 s"
                stream.finished = stream.finished or once
        finally:
            stop_ffmpeg()

    stream.blocks = blocks()
    return stream
