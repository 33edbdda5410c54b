"""A live web view of a ``stae run`` (``--serve 127.0.0.1:8080``): one tile per stream, the
Prometheus metrics and a health check, from a small HTTP server on its own thread.

    GET /                  the page: per stream, actual | predicted | error heat-map live
                           (MJPEG), its numbers and a plot of its surprise score; no asset
                           comes from the internet
    GET /stream/<i>.mjpg   stream i's panels as MJPEG (multipart/x-mixed-replace)
    GET /frame/<i>.jpg     stream i's latest panel as one JPEG
    GET /api/streams       every stream's numbers and recent surprise scores, JSON
    GET /metrics           Prometheus text format (:mod:`stae_deploy.runtime.run_metrics`)
    GET /healthz           per-stream health, JSON; 200 when every stream is healthy, else 503

A stream is unhealthy while its source is reconnecting, when it has had no frame for
``stale_s``, when its last step gave NaN/Inf, and once it has ended with an error. Panels are
composed only while someone watches (a request in the last few seconds) and at most ``max_fps``
per stream, so an unwatched view costs nearly nothing. The JPEG encoder and the HTTP server run
on threads at Linux's idle scheduling priority (``SCHED_IDLE``): they get a core only when the
model's threads leave one free, so a viewer slows the run by little more than composing the
panels (under a saturated CPU the view's frame rate drops instead). The server binds
127.0.0.1 unless another address is asked for explicitly (:class:`ViewSettings`).
"""
from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Sequence

import cv2
import numpy as np

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.run_metrics import CONTENT_TYPE, RunMetrics
from stae_deploy.runtime.sources import FrameGrabber
from stae_deploy.runtime.streaming import RunSummary

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
VIEWER_IDLE_S = 5.0          # no request for this long: nobody is watching
BOUNDARY = "stae-frame"
SCORE_HISTORY = 300          # surprise scores kept per stream for the page's plot
ROLLING_STEPS = 100          # steps behind the rolling numbers (latency, gain, fps)


@dataclass(frozen=True)
class ViewSettings:
    """host, port: where the page is served (port 0: any free port). allow_remote: bind an
    address other than loopback (off unless asked for). max_fps: panels per second and stream
    (> 0). jpeg_quality: 1..100. stale_s: a stream with no frame for this long is unhealthy."""

    host: str = "127.0.0.1"
    port: int = 8080
    allow_remote: bool = False
    max_fps: float = 10.0
    jpeg_quality: int = 80
    stale_s: float = 5.0

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise ConfigError(f"--serve {self.host}:{self.port}: this address can be reached "
                              f"from other machines; pass --serve-remote to allow it, or serve "
                              f"on 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: expected 0..65535, got {self.port}")
        if self.max_fps <= 0 or not 1 <= self.jpeg_quality <= 100 or self.stale_s <= 0:
            raise ConfigError(f"max_fps/jpeg_quality/stale_s: expected > 0, 1..100, > 0; got "
                              f"{self.max_fps}, {self.jpeg_quality}, {self.stale_s}")

    @classmethod
    def parse(cls, text: str, allow_remote: bool = False) -> "ViewSettings":
        """``HOST:PORT`` (or ``:PORT``, meaning 127.0.0.1) from the command line."""
        host, _, port = text.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"--serve {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host or "127.0.0.1", int(port), allow_remote)


@dataclass
class _Tile:
    """What the page shows of one stream."""

    source: str
    jpeg: bytes | None = None
    pending_panel: np.ndarray | None = None    # composed, waiting for the encoder thread
    panel_id: int = 0
    panel_at: float = 0.0
    last_step_at: float | None = None
    step_times: deque[float] = field(default_factory=lambda: deque(maxlen=ROLLING_STEPS))
    infer_ms: deque[float] = field(default_factory=lambda: deque(maxlen=ROLLING_STEPS))
    gains_db: deque[float] = field(default_factory=lambda: deque(maxlen=ROLLING_STEPS))
    scores: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=SCORE_HISTORY))
    numbers: dict[str, Any] = field(default_factory=dict)
    nonfinite: bool = False
    ended: str | None = None             # why the stream ended ("" when it ended normally)


class LiveView:
    """The HTTP server and what it shows; a context manager. The streaming loop calls
    :meth:`wants_panel` and :meth:`on_step` (it is a ``StepObserver``)."""

    def __init__(self, settings: ViewSettings, sources: Sequence[str],
                 surprise_threshold: float):
        self.settings, self.surprise_threshold = settings, surprise_threshold
        self.metrics = RunMetrics(sources)
        self._tiles = [_Tile(source) for source in sources]
        self._grabbers: list[FrameGrabber | None] = [None] * len(sources)
        self._changed = threading.Condition()
        self._viewer_at = 0.0
        self._closed = False
        try:
            self._server = ThreadingHTTPServer((settings.host, settings.port), _handler(self))
        except OSError as err:
            raise ConfigError(f"--serve {settings.host}:{settings.port}: cannot listen there "
                              f"({err.strerror or err}); choose another port") from None
        self._server.daemon_threads = True
        self._threads = [threading.Thread(target=target, daemon=True, name=name) for target, name
                         in ((self._serve, "stae-live-view"), (self._encode, "stae-live-view-jpeg"))]
        for thread in self._threads:
            thread.start()

    def _serve(self) -> None:
        """The HTTP server's thread (and, inherited, its request threads), at idle priority."""
        _idle_priority()
        self._server.serve_forever()

    def _encode(self) -> None:
        """The JPEG encoder's thread, at idle priority: encodes each tile's newest panel."""
        _idle_priority()
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality]
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or any(
                    tile.pending_panel is not None for tile in self._tiles))
                if self._closed:
                    return
                work = [(tile, tile.pending_panel) for tile in self._tiles
                        if tile.pending_panel is not None]
                for tile, _ in work:
                    tile.pending_panel = None
            for tile, panel in work:
                ok, encoded = cv2.imencode(".jpg", panel, quality)
                if ok:
                    with self._changed:
                        tile.jpeg = encoded.tobytes()
                        tile.panel_id += 1
                        self._changed.notify_all()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def watch_sources(self, grabbers: Sequence[FrameGrabber]) -> None:
        """The streams' grabbers, read by the health check (reconnecting, finished)."""
        self._grabbers = list(grabbers)

    # -- the streaming loop's side ---------------------------------------------------------------

    def watched(self) -> bool:
        """Whether someone is watching: a page or panel request in the last few seconds."""
        return time.monotonic() - self._viewer_at < VIEWER_IDLE_S

    def wants_panel(self, index: int) -> bool:
        """Whether stream ``index``'s next panel would be shown: someone is watching, the last
        one is at least 1/max_fps old and the encoder has taken it (a panel it would drop
        unencoded is not composed)."""
        tile = self._tiles[index]
        return (self.watched() and tile.pending_panel is None
                and time.monotonic() - tile.panel_at >= 1.0 / self.settings.max_fps)

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                panel: np.ndarray | None) -> None:
        """Stream ``index`` made a step: its metrics ``record``, its running ``summary`` and,
        when :meth:`wants_panel` said so, its BGR panel."""
        tile, now = self._tiles[index], time.monotonic()
        tile.last_step_at = now
        tile.step_times.append(now)
        tile.infer_ms.append(record["infer_ms"])
        tile.nonfinite = bool(record["nonfinite"])
        if "psnr_db" in record:
            tile.gains_db.append(record["psnr_db"] - record["copy_last_psnr_db"])
        if record.get("surprise") is not None:
            tile.scores.append((record["source_frame"], round(record["surprise"], 2)))
        gain = round(statistics.fmean(tile.gains_db), 3) if tile.gains_db else None
        ms = sorted(tile.infer_ms)
        tile.numbers = {
            "step": record["step"], "source_frame": record["source_frame"],
            "fps": round((len(tile.step_times) - 1) / (tile.step_times[-1] - tile.step_times[0]),
                         2) if len(tile.step_times) > 1 and tile.step_times[-1] > tile.step_times[0]
            else None,
            "step_latency_ms_p50": round(ms[len(ms) // 2], 2),
            "step_latency_ms_p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2),
            "dropped_frames": summary.dropped_frames, "reconnects": summary.reconnects,
            "state_resets": summary.resets, "nonfinite_resets": summary.nonfinite_resets,
            "state_losses": summary.state_losses, "gain_over_copy_last_db": gain,
            "surprise": record.get("surprise"), "surprise_events": summary.surprise_events,
            "out_of_range_steps": summary.out_of_range_steps}
        healthy, _ = self.health(index)
        self.metrics.observe(index, record, {
            "frames": summary.steps, "dropped_frames": summary.dropped_frames,
            "reconnects": summary.reconnects, "resets": summary.resets,
            "nonfinite_resets": summary.nonfinite_resets, "state_losses": summary.state_losses,
            "surprise_events": summary.surprise_events,
            "out_of_range_steps": summary.out_of_range_steps}, gain, healthy)
        if panel is not None:                  # encoded by the encoder thread, off this one
            with self._changed:
                tile.pending_panel, tile.panel_at = panel, now
                self._changed.notify_all()

    def on_end(self, index: int, summary: RunSummary) -> None:
        """Stream ``index`` ended (``summary.error`` says why, None: normally)."""
        self._tiles[index].ended = summary.error or ""
        self.metrics.set_healthy(index, self.health(index)[0])

    # -- the server's side -----------------------------------------------------------------------

    def health(self, index: int) -> tuple[bool, str]:
        """(healthy, why) of stream ``index``."""
        tile, grabber = self._tiles[index], self._grabbers[index]
        if tile.ended is not None:
            return (False, f"ended: {tile.ended}") if tile.ended else (True, "ended normally")
        if grabber is not None and grabber.reconnecting:
            return False, "the source is reconnecting"
        if tile.nonfinite:
            return False, "the model's last prediction was not finite (NaN/Inf); state reset"
        if tile.last_step_at is None:
            return True, "starting"
        idle_s = time.monotonic() - tile.last_step_at
        if idle_s > self.settings.stale_s:
            return False, f"no frame for {idle_s:.0f} s"
        return True, "ok"

    def streams_json(self) -> dict[str, Any]:
        """Every stream's numbers, health and recent (frame, score) pairs, and the surprise
        threshold."""
        self._viewer_at = time.monotonic()
        out = []
        for index, tile in enumerate(self._tiles):
            healthy, why = self.health(index)
            out.append({"stream": index, "source": tile.source, "healthy": healthy,
                        "health": why, **tile.numbers, "scores": list(tile.scores)})
        return {"surprise_threshold": self.surprise_threshold, "streams": out}

    def latest_jpeg(self, index: int, after: int = -1, timeout_s: float = 1.0
                    ) -> tuple[int, bytes | None]:
        """(panel id, JPEG) of stream ``index``'s newest panel, waiting up to ``timeout_s``
        for one newer than ``after``."""
        self._viewer_at = time.monotonic()
        tile = self._tiles[index]
        with self._changed:
            self._changed.wait_for(lambda: tile.panel_id > after or self._closed,
                                   timeout=timeout_s)
            return tile.panel_id, tile.jpeg

    @property
    def stream_count(self) -> int:
        return len(self._tiles)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "LiveView":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _idle_priority() -> None:
    """Run the calling thread (and the threads it starts) at Linux's idle scheduling priority:
    it gets a core only when the model's threads leave one free, so watching never slows the
    run (elsewhere: unchanged)."""
    if hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _handler(view: LiveView) -> type[BaseHTTPRequestHandler]:
    """The request handler class bound to ``view``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "stae-live-view"

        def log_message(self, format: str, *args: Any) -> None:   # quiet: the run logs
            return

        def do_GET(self) -> None:
            try:
                self._answer(self.path.split("?", 1)[0])
            except (BrokenPipeError, ConnectionResetError):
                return                                   # the viewer left mid-answer

        def _answer(self, path: str) -> None:
            if path == "/":
                self._send(200, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/api/streams":
                self._send(200, "application/json", json.dumps(view.streams_json()).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE, view.metrics.text())
            elif path == "/healthz":
                streams = []
                for index in range(view.stream_count):
                    healthy, why = view.health(index)
                    streams.append({"stream": index, "healthy": healthy, "health": why})
                ok = all(s["healthy"] for s in streams)
                self._send(200 if ok else 503, "application/json",
                           json.dumps({"healthy": ok, "streams": streams}).encode())
            elif (index := _stream_index(path, "/frame/", ".jpg")) is not None:
                _, jpeg = view.latest_jpeg(index, timeout_s=0.0)
                if jpeg is None:
                    self._send(404, "text/plain", b"no panel yet")
                else:
                    self._send(200, "image/jpeg", jpeg)
            elif (index := _stream_index(path, "/stream/", ".mjpg")) is not None:
                self._mjpeg(index)
            else:
                self._send(404, "text/plain", b"not found")

        def _mjpeg(self, index: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seen = -1
            while not view.closed:
                panel_id, jpeg = view.latest_jpeg(index, seen)
                if jpeg is None or panel_id == seen:
                    continue
                seen = panel_id
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                 f"Content-Length: {len(jpeg)}\r\n\r\n".encode())
                self.wfile.write(jpeg + b"\r\n")
                self.wfile.flush()

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

    def _stream_index(path: str, prefix: str, suffix: str) -> int | None:
        if not (path.startswith(prefix) and path.endswith(suffix)):
            return None
        number = path[len(prefix):-len(suffix)]
        return int(number) if number.isdigit() and int(number) < view.stream_count else None

    return Handler


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>stae run: live</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 16px; background: #111; color: #ddd; }
h1 { font-size: 18px; margin: 0 0 12px; }
.tile { background: #1c1c1c; border-radius: 6px; padding: 10px; margin-bottom: 14px;
        display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
.tile img { image-rendering: pixelated; min-width: 480px; max-width: 60vw; background: #000; }
.title { font-weight: 600; margin-bottom: 6px; word-break: break-all; }
table { border-collapse: collapse; } td { padding: 1px 8px 1px 0; }
td.value { text-align: right; font-variant-numeric: tabular-nums; }
.bad { color: #ff6b6b; } .good { color: #7bd88f; }
canvas { background: #151515; border: 1px solid #333; margin-top: 6px; }
</style></head><body>
<h1>stae run: live view</h1><div id="tiles"></div>
<script>
const NUMBERS = [["fps", "fps"], ["step_latency_ms_p50", "step latency p50 (ms)"],
  ["step_latency_ms_p99", "step latency p99 (ms)"], ["dropped_frames", "dropped frames"],
  ["reconnects", "reconnects"], ["state_resets", "state resets"],
  ["nonfinite_resets", "NaN resets"], ["state_losses", "state losses"],
  ["gain_over_copy_last_db", "gain over copy-last (dB)"], ["surprise", "surprise"],
  ["surprise_events", "surprise events"], ["out_of_range_steps", "state out of range (steps)"]];
function tile(s) {
  let el = document.getElementById("tile" + s.stream);
  if (el) return el;
  el = document.createElement("div"); el.className = "tile"; el.id = "tile" + s.stream;
  el.innerHTML = '<img src="/stream/' + s.stream + '.mjpg" alt="stream ' + s.stream + '">' +
    '<div><div class="title"></div><div class="health"></div><table></table>' +
    '<canvas width="360" height="110"></canvas></div>';
  document.getElementById("tiles").appendChild(el);
  return el;
}
function fmt(v) { return v === null || v === undefined ? "-" :
  (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(2) : String(v)); }
function plot(canvas, scores, threshold) {
  const g = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  const top = Math.max(threshold * 1.5, ...scores.map(p => p[1]), 1), bottom = -3;
  const y = v => h - (Math.max(bottom, Math.min(top, v)) - bottom) / (top - bottom) * h;
  g.strokeStyle = "#a33"; g.setLineDash([4, 3]); g.beginPath();
  g.moveTo(0, y(threshold)); g.lineTo(w, y(threshold)); g.stroke(); g.setLineDash([]);
  g.strokeStyle = "#6cf"; g.beginPath();
  scores.forEach((p, i) => { const x = i / Math.max(1, scores.length - 1) * w;
    i ? g.lineTo(x, y(p[1])) : g.moveTo(x, y(p[1])); });
  g.stroke(); g.fillStyle = "#888";
  g.fillText("surprise score (threshold " + threshold + ")", 4, 12);
}
async function refresh() {
  try {
    const data = await (await fetch("/api/streams")).json();
    for (const s of data.streams) {
      const el = tile(s);
      el.querySelector(".title").textContent = "stream " + s.stream + ": " + s.source;
      const health = el.querySelector(".health");
      health.textContent = (s.healthy ? "healthy" : "unhealthy") + " (" + s.health + ")";
      health.className = "health " + (s.healthy ? "good" : "bad");
      el.querySelector("table").innerHTML = NUMBERS.map(([k, label]) =>
        "<tr><td>" + label + '</td><td class="value">' + fmt(s[k]) + "</td></tr>").join("");
      plot(el.querySelector("canvas"), s.scores, data.surprise_threshold);
    }
  } catch (e) { /* the run ended or is restarting: keep the last view */ }
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
