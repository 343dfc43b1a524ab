"""``--monitor``: what the detector hears, on a small local HTTP endpoint (stdlib only).

* ``/metrics`` — Prometheus text format: events, hops, p(danger), threshold, real-time factor,
  input level (dBFS), dropped blocks, near misses, input health.
* ``/live`` — JSON: the last hops (p(danger), top classes) and the recent near misses (hops
  within ``near_miss_margin`` below the threshold, outside an event) — to tune the threshold.
* ``/`` — a tiny page that shows ``/live`` as it changes.

Bound to 127.0.0.1 by default; one server thread answers one request at a time.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from edge_runtime.lifecycle import EventRecord, Health, Hop

log = logging.getLogger("edge-detect")

PAGE = """<!doctype html><meta charset="utf-8"><title>edge-detect: what it hears</title>
<style>body{font:14px monospace;margin:1em}td{padding:0 .6em}.hot{color:#c00}</style>
<h3>edge-detect: what it hears</h3><div id="s"></div><table id="t"></table>
<h4>near misses</h4><table id="n"></table><script>
function row(h){return `<tr class="${h.p_danger>=h.threshold?'hot':''}"><td>${h.time}</td>
<td>p=${h.p_danger.toFixed(2)}</td><td>${'#'.repeat(Math.round(h.p_danger*40))}</td>
<td>${h.top.map(t=>t[0]+' '+t[1].toFixed(2)).join(', ')}</td></tr>`}
async function tick(){const r=await (await fetch('live')).json();
document.getElementById('s').textContent=`threshold ${r.threshold} · level ${r.level_dbfs}
 dBFS · RTF ${r.rtf} · events ${r.events} · ${r.healthy?'input healthy':'INPUT PROBLEM'}`;
document.getElementById('t').innerHTML=r.hops.slice(-30).reverse().map(row).join('');
document.getElementById('n').innerHTML=r.near_misses.slice().reverse().map(row).join('')}
setInterval(tick,1000);tick()</script>
"""


class Monitor:
    """A :class:`~edge_runtime.lifecycle.Sink` and ``Observer`` serving live state over HTTP."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, keep: int = 120,
                 near_miss_margin: float = 0.2) -> None:
        self.near_miss_margin = near_miss_margin
        self._lock = threading.Lock()
        self.hops: deque[Hop] = deque(maxlen=max(1, keep))
        self.near_misses: deque[Hop] = deque(maxlen=50)
        self.events: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.threshold = 0.0
        self.healthy = True
        self.problem = ""
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/metrics":
                    monitor._reply(self, monitor.metrics(),
                                   "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/live":
                    monitor._reply(self, json.dumps(monitor.live()), "application/json")
                elif path == "/":
                    monitor._reply(self, PAGE, "text/html; charset=utf-8")
                else:
                    self.send_error(404)

            def log_message(self, *_args: object) -> None:
                pass

        try:
            self.server = HTTPServer((host, port), Handler)
        except OSError as exc:
            raise ValueError(f"--monitor: cannot listen on {host}:{port} "
                             f"({exc.strerror or exc})") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="monitor",
                                        daemon=True)
        self._thread.start()
        log.info("monitor: http://%s:%d/ (/metrics, /live)", host, self.port)

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, text: str, content_type: str) -> None:
        body = text.encode()
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.end_headers()
        handler.wfile.write(body)

    # Sink ----------------------------------------------------------------------------------
    def on_start(self, record: EventRecord) -> None:
        with self._lock:
            self.events[record.event_type] += 1

    def on_update(self, record: EventRecord) -> None:
        pass

    def on_end(self, record: EventRecord) -> None:
        pass

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # Observer ------------------------------------------------------------------------------
    def on_hop(self, hop: Hop) -> None:
        with self._lock:
            self.hops.append(hop)
            self.threshold = hop.threshold
            self.counts["hops"] += 1
            if (not hop.in_event
                    and hop.threshold - self.near_miss_margin <= hop.p_danger < hop.threshold):
                self.near_misses.append(hop)
                self.counts["near_misses"] += 1

    def on_health(self, health: Health) -> None:
        with self._lock:
            self.healthy, self.problem = health.healthy, health.problem

    # views ---------------------------------------------------------------------------------
    def live(self) -> dict[str, Any]:
        with self._lock:
            last = self.hops[-1] if self.hops else None
            return {"threshold": self.threshold, "healthy": self.healthy,
                    "problem": self.problem, "events": sum(self.events.values()),
                    "level_dbfs": last.level_dbfs if last else None,
                    "rtf": last.rtf if last else None,
                    "hops": [asdict(h) for h in self.hops],
                    "near_misses": [asdict(h) for h in self.near_misses]}

    def metrics(self) -> str:
        with self._lock:
            last = self.hops[-1] if self.hops else None
            out: list[str] = []

            def metric(name: str, kind: str, text: str,
                       samples: list[tuple[str, float]]) -> None:
                out.append(f"# HELP edge_detect_{name} {text}")
                out.append(f"# TYPE edge_detect_{name} {kind}")
                out.extend(f"edge_detect_{name}{labels} {value:g}" for labels, value in samples)

            metric("events_total", "counter", "Danger events started, by class.",
                   [(f'{{class="{k}"}}', v) for k, v in sorted(self.events.items())]
                   or [('{class="danger"}', 0)])
            metric("hops_total", "counter", "Windows scored.", [("", self.counts["hops"])])
            metric("near_misses_total", "counter",
                   "Hops just below the threshold outside an event.",
                   [("", self.counts["near_misses"])])
            metric("threshold", "gauge", "Danger threshold.", [("", self.threshold)])
            metric("input_healthy", "gauge", "1 while the input is healthy.",
                   [("", 1.0 if self.healthy else 0.0)])
            if last is not None:
                metric("p_danger", "gauge", "p(danger) of the last hop.", [("", last.p_danger)])
                metric("realtime_factor", "gauge",
                       "Compute seconds per second of audio, recent.", [("", last.rtf)])
                metric("input_level_dbfs", "gauge", "Input RMS level of the last hop, dBFS.",
                       [("", last.level_dbfs)])
                metric("dropped_blocks_total", "counter", "Input blocks dropped by the source.",
                       [("", last.dropped_blocks)])
            return "\n".join(out) + "\n"
