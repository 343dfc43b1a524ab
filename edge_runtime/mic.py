"""Live input through PortAudio (sounddevice): ALSA, PulseAudio or PipeWire devices.

sounddevice is imported lazily so file and stdin modes work where PortAudio is missing.
The device's native rate is kept and resampled to the model rate with a streaming soxr
resampler. Overflows (PortAudio's or our own full queue) are counted and logged, never fatal.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np

from edge_runtime import audio as audio_io
from edge_runtime.sources import Stream

log = logging.getLogger("edge-detect")


class MicError(RuntimeError):
    """No usable input device (one-line message)."""


class PortAudioMissing(MicError):
    """The PortAudio library is not installed, or hangs: retrying in this process cannot
    help (the service manager restarts it)."""


MAX_HUNG_CLOSES = 3  # closes of dead streams still blocked in PortAudio; more: give up
_hung: list[threading.Thread] = []


def _sd() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio library missing
        raise PortAudioMissing(f"PortAudio is not available ({exc}); install libportaudio2"
                               ) from None
    return sounddevice


def input_devices() -> list[dict[str, Any]]:
    """Every device with input channels, with its PortAudio index and host API name."""
    sd = _sd()
    apis = sd.query_hostapis()
    out = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            out.append({"index": index, "name": dev["name"],
                        "hostapi": apis[dev["hostapi"]]["name"],
                        "channels": dev["max_input_channels"],
                        "rate": float(dev["default_samplerate"])})
    return out


def describe_devices() -> str:
    """Human table for ``--list-devices``."""
    devices = input_devices()
    if not devices:
        return "no input devices found"
    return "\n".join(f"{d['index']:3d}  {d['name']}  ({d['hostapi']}, {d['channels']} ch, "
                     f"{d['rate']:.0f} Hz)" for d in devices)


def find_device(spec: str | int | None) -> dict[str, Any]:
    """Pick an input device by index, by case-insensitive name substring, or the default."""
    devices = input_devices()
    if not devices:
        raise MicError("no input devices found (is a microphone connected? try --list-devices)")
    if spec is None or str(spec) == "":
        default = _sd().default.device[0]
        match = [d for d in devices if d["index"] == default]
        return match[0] if match else devices[0]
    text = str(spec).strip()
    if text.isdigit():
        match = [d for d in devices if d["index"] == int(text)]
    else:
        exact = [d for d in devices if d["name"].lower() == text.lower()]
        match = exact or [d for d in devices if text.lower() in d["name"].lower()]
    if not match:
        names = ", ".join(f"{d['index']}:{d['name']}" for d in devices)
        raise MicError(f"no input device matches {text!r}; available: {names}")
    return match[0]


def reset_portaudio() -> None:
    """Re-initialise PortAudio so devices that vanished or came back are seen afresh."""
    sd = _sd()
    try:
        sd._terminate()
        sd._initialize()
    except Exception as exc:  # PortAudioError: the next open reports it
        log.debug("PortAudio re-initialisation failed: %s", exc)


def mic_stream(device: str | int | None, target_rate: int, stop: threading.Event,
               block_s: float = 0.1, queue_s: float = 10.0, stall_s: float = 10.0) -> Stream:
    """Open the input device and stream it (blocks float32 mono at ``target_rate``).

    The stream ends (``decoded.problem`` says why) when no audio arrives for ``stall_s``
    seconds: the device was unplugged or its sound server died; the watchdog reopens it."""
    _hung[:] = [t for t in _hung if t.is_alive()]
    if len(_hung) >= MAX_HUNG_CLOSES:  # each reopen would leave one more thread blocked
        raise PortAudioMissing(f"PortAudio has not closed {len(_hung)} dead input streams; "
                               "exiting so the service manager can restart edge-detect")
    sd = _sd()
    dev = find_device(device)
    rate = int(dev["rate"]) or target_rate
    blocksize = max(64, int(block_s * rate))
    frames: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(4, int(queue_s / block_s)))
    counters = {"overflows": 0, "dropped": 0}

    def callback(indata: np.ndarray, n: int, _time: Any, status: Any) -> None:
        if status and status.input_overflow:
            counters["overflows"] += 1
        try:
            frames.put_nowait(indata[:, 0].copy())
        except queue.Full:
            counters["dropped"] += 1

    try:
        stream = sd.InputStream(device=dev["index"], channels=1, samplerate=rate,
                                blocksize=blocksize, dtype="float32", callback=callback)
    except Exception as exc:  # PortAudioError and friends: report, don't trace
        raise MicError(f"cannot open input device {dev['name']!r} at {rate} Hz "
                       f"({' '.join(str(exc).split())})") from None
    name = f"{dev['name']} ({dev['hostapi']})"
    log.info("listening on device %d: %s at %d Hz → %d Hz", dev["index"], name, rate,
             target_rate)

    decoded = audio_io.Decoded(sample_rate=rate, channels=1)

    def close() -> None:
        """Abort and close the PortAudio stream; bounded even if the backend hangs."""
        def work() -> None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:  # a dead backend: nothing left to release
                log.debug("%s: closing failed (%s)", name, exc)
        if sys.is_finalizing():  # no new threads at interpreter exit
            work()
            return
        closer = threading.Thread(target=work, daemon=True, name="mic-close")
        closer.start()
        closer.join(timeout=5.0)
        if closer.is_alive():
            _hung.append(closer)

    def blocks() -> Iterator[np.ndarray]:
        resample = audio_io.Resampler(rate, target_rate)
        reported, waited = (0, 0), 0.0
        try:
            stream.start()
        except Exception as exc:
            close()
            raise MicError(f"cannot start input device {dev['name']!r} "
                           f"({' '.join(str(exc).split())})") from None
        try:
            while not stop.is_set():
                try:
                    block = frames.get(timeout=0.2)
                except queue.Empty:
                    waited += 0.2
                    if waited >= 5.0 and waited - 0.2 < 5.0:
                        log.warning("%s: no audio for 5 s — device unplugged or stalled?", name)
                    if stall_s > 0 and waited >= stall_s:
                        decoded.problem = f"no audio for {stall_s:.0f} s (device stalled)"
                        return
                    continue
                waited = 0.0
                now = (counters["overflows"], counters["dropped"])
                if now != reported:
                    log.warning("%s: input overflow — %d PortAudio overflows, %d blocks dropped "
                                "so far (the detector fell behind)", name, *now)
                    reported = now
                block, _ = audio_io.scrub(block)
                decoded.frames_in += block.size
                out = resample(block)
                if out.size:
                    yield out
        finally:
            close()

    return Stream(name, False, datetime.now(UTC), blocks(), decoded)
