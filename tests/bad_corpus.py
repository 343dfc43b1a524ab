"""A generated corpus of bad, odd and good audio files (nothing committed: all made here).

:func:`write_corpus` fills a folder and returns what each file is expected to produce:
``error`` (unusable: exactly one ERROR line naming it), ``partial`` (truncated/corrupt: one
WARNING line naming it, the audio before the problem scored), ``good`` (processed: its summary
line) or ``ignored`` (not an audio name: never mentioned).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime.text import printable
from tests.runtime_model import SR, hiss, tone


def wav_header(rate: int, channels: int, bits: int, frames: int, fmt: int = 1) -> bytes:
    """A 44-byte PCM WAV header; every field as given (absurd values welcome)."""
    align = channels * bits // 8
    data = frames * align
    return (b"RIFF" + struct.pack("<I", (36 + data) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, fmt, channels, rate & 0xFFFFFFFF,
                          (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits)
            + b"data" + struct.pack("<I", data & 0xFFFFFFFF))


def _cut(path: Path, fraction: float, name: str) -> None:
    raw = path.read_bytes()
    (path.parent / name).write_bytes(raw[: int(len(raw) * fraction)])


def write_corpus(d: Path) -> dict[str, str]:
    """Populate ``d``; returns {printable file name: error|partial|good|ignored}."""
    d.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, str] = {}
    good = np.concatenate([hiss(2.0), tone(3.0), hiss(1.0)])
    rng = np.random.default_rng(0)

    def put(name: str | bytes, data: bytes, kind: str) -> None:
        path = d / os.fsdecode(name)
        path.write_bytes(data)
        kinds[printable(path.name)] = kind

    # --- unusable: one ERROR line each
    put("empty.wav", b"", "error")
    put("empty.flac", b"", "error")
    put("empty.mp3", b"", "error")
    put("garbage.wav", rng.bytes(4000), "error")
    put("garbage.ogg", rng.bytes(20000), "error")
    put("garbage.flac", b"fLaC" + rng.bytes(4000), "error")
    put("text.aiff", b"this is not audio\n" * 50, "error")
    put("header_only.wav", wav_header(SR, 1, 16, 0), "error")
    put("rate_1hz.wav", wav_header(1, 1, 16, 160000) + rng.bytes(320000), "error")
    put("rate_4ghz.wav", wav_header(0xFFFFFFF0, 1, 16, 16000) + bytes(32000), "error")
    put("channels_0.wav", wav_header(SR, 0, 16, 16000) + bytes(32000), "error")
    put("channels_1000.wav", wav_header(SR, 1000, 16, 100) + bytes(200000), "error")
    put("bits_0.wav", wav_header(SR, 1, 0, 16000) + bytes(32000), "error")
    put("format_0x9999.wav", wav_header(SR, 1, 16, 16000, fmt=0x9999) + bytes(32000), "error")
    put(b"garbage_\xfe\xff.wav", rng.bytes(3000), "error")  # not UTF-8 and not audio
    put("\x1b[31mred\x1b[0m.wav", rng.bytes(3000), "error")  # terminal escapes in the name
    os.symlink(d / "missing-target.wav", d / "dangling.wav")
    kinds["dangling.wav"] = "error"
    os.symlink("self_loop.wav", d / "self_loop.wav")
    kinds["self_loop.wav"] = "error"
    os.symlink("loop_b.wav", d / "loop_a.wav")
    os.symlink("loop_a.wav", d / "loop_b.wav")
    kinds["loop_a.wav"] = kinds["loop_b.wav"] = "error"
    os.mkfifo(d / "fifo.wav")
    kinds["fifo.wav"] = "error"
    (d / "a_directory.wav").mkdir()
    kinds["a_directory.wav"] = "error"
    os.symlink("/dev/zero", d / "dev_zero.wav")
    kinds["dev_zero.wav"] = "error"
    sf.write(d / "full.flac", good, SR)
    raw = (d / "full.flac").read_bytes()
    put("flac_header_only.flac", raw[:200], "error")

    # --- truncated or corrupt mid-way: the audio before the problem is kept
    _cut(d / "full.flac", 0.6, "cut.flac")
    kinds["cut.flac"] = "partial"
    broken = bytearray(raw)
    broken[len(raw) // 2: len(raw) // 2 + 2000] = rng.bytes(2000)
    put("corrupt_middle.flac", bytes(broken), "partial")
    (d / "full.flac").unlink()
    sf.write(d / "full.mp3", good, SR, format="MP3")
    _cut(d / "full.mp3", 0.5, "cut.mp3")
    kinds["cut.mp3"] = "partial"
    (d / "full.mp3").unlink()

    # --- usable, some odd: processed (a summary line naming each)
    sf.write(d / "full.ogg", good, SR, format="OGG")
    _cut(d / "full.ogg", 0.5, "cut.ogg")  # libsndfile ends the Vorbis stream quietly
    kinds["cut.ogg"] = "good"
    (d / "full.ogg").unlink()
    sf.write(d / "full.wav", good, SR)
    _cut(d / "full.wav", 0.5, "cut.wav")  # the header promises more than is there
    kinds["cut.wav"] = "good"
    (d / "full.wav").unlink()
    put("huge_data_claim.wav", wav_header(SR, 1, 16, 10**9) + bytes(64000), "good")
    put("bits_13.wav", wav_header(SR, 1, 13, 16000) + bytes(32000), "good")
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"):
        sf.write(d / f"{subtype.lower()}.wav", good, SR, subtype=subtype)
        kinds[f"{subtype.lower()}.wav"] = "good"
    for rate in (8000, 22050, 96000, 384000):
        sf.write(d / f"rate_{rate}.flac", tone(3.0, sr=rate), rate)
        kinds[f"rate_{rate}.flac"] = "good"
    sf.write(d / "six_channels.wav", np.tile(good[:, None], (1, 6)), SR)
    sf.write(d / "one_sample.wav", good[:1], SR)
    nan = good.copy()
    nan[100:200] = np.nan
    nan[300] = np.inf
    sf.write(d / "nan.wav", nan, SR, subtype="FLOAT")
    sf.write(d / "all_inf.wav", np.full(SR, np.inf, np.float32), SR, subtype="FLOAT")
    sf.write(d / "wav_named.mp3", good, SR, format="WAV")  # content decides, not the suffix
    for name, fmt in (("aiff.aiff", "AIFF"), ("au.au", "AU"), ("caf.caf", "CAF"),
                      ("w64.w64", "W64"), ("vorbis.ogg", "OGG"), ("mp3.mp3", "MP3")):
        sf.write(d / name, good, SR, format=fmt)
    for name in ("six_channels.wav", "one_sample.wav", "nan.wav", "all_inf.wav",
                 "wav_named.mp3", "aiff.aiff", "au.au", "caf.caf", "w64.w64", "vorbis.ogg",
                 "mp3.mp3"):
        kinds[name] = "good"
    sf.write(os.fsencode(d) + b"/latin1_caf\xe9.wav", good, SR)  # not valid UTF-8
    kinds[printable(os.fsdecode(b"latin1_caf\xe9.wav"))] = "good"
    forged = "evil\n12:00:00 WARNING DANGER #99 started: forged.wav"
    sf.write(d / f"{forged}.wav", good, SR)
    kinds[printable(f"{forged}.wav")] = "good"

    # --- not audio names: never read, never mentioned
    for name in ("notes.txt", "incoming.wav.part", "x.wav.tmp", ".hidden.wav", "backup.wav~"):
        put(name, b"ignored", "ignored")
    return kinds
