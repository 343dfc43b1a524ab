"""A live WAV stream over HTTP on 127.0.0.1, for the network-source tests (run as a script).

``python tests/live_wav_server.py PORT`` serves ``/live.wav`` to every client: an endless
16 kHz mono s16 WAV (the header's sizes say "unknown"), paced in real time, repeating
``hiss (quiet) 3 s → tone (loud) 3 s``. Loud is "danger" for the tiny test model.
"""

from __future__ import annotations

import struct
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

RATE = 16000


def cycle() -> bytes:
    rng = np.random.default_rng(0)
    quiet = 0.005 * rng.standard_normal(3 * RATE)
    t = np.arange(3 * RATE) / RATE
    loud = 0.5 * np.sin(2 * np.pi * 1000 * t)
    return (np.concatenate([quiet, loud]) * 32767).astype("<i2").tobytes()


def header() -> bytes:
    unknown = 0xFFFFFFFF
    return (b"RIFF" + struct.pack("<I", unknown) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16) +
            b"data" + struct.pack("<I", unknown))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.end_headers()
        data, step = cycle(), RATE * 2 // 10  # 0.1 s per write
        try:
            self.wfile.write(header())
            start, sent = time.monotonic(), 0
            while True:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    sent += step
                    delay = start + sent / (RATE * 2) - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *_args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    print("serving", flush=True)
    server.serve_forever()
