"""The live view's own process: the HTTP server, the panels' JPEG encoder and the metrics of a
``stae run --serve`` (:mod:`stae_deploy.runtime.live_view` starts it and says what it serves).

It runs in a process of its own, so it never holds the run's GIL, at a low priority
(``VIEW_NICENESS``) with OpenCV on one thread, so it takes a core from the model as seldom and
as briefly as it can.
It reads what to show from :class:`stae_deploy.runtime.live_view_state.ViewState` when asked;
the run rings its doorbell (a pipe) when a panel's frames wait in shared memory, and closes it
when the run ends (or dies): the server then stops and the process exits.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Sequence

import cv2

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.live_view_state import (ENDED_NORMALLY, ENDED_WITH_ERROR,
                                                 StreamSnapshot, ViewState)
from stae_deploy.runtime.run_metrics import CONTENT_TYPE, RunMetrics
from stae_deploy.runtime.streaming import PanelFrames, compose_panel

if TYPE_CHECKING:
    from stae_deploy.runtime.live_view import ViewSettings

BOUNDARY = "stae-frame"
# niceness of the view's process. Not SCHED_IDLE: with the model's threads on every core an
# idle-priority view was starved (0.05 panels/s per stream, benchmarks/live_view_cost.py);
# at niceness 10 it gets the little it needs and costs the run no more than noise.
VIEW_NICENESS = 10


def serve_view(settings: ViewSettings, sources: Sequence[str], surprise_threshold: float,
               frame_hw: tuple[int, int], state_name: str, doorbell: Connection,
               replies: Connection) -> None:
    """The view process' entry point: serve until the doorbell closes. ``replies`` gets
    ``("ready", url)`` once the server listens, or ``("error", message)``."""
    lower_priority()
    state = ViewState(len(sources), frame_hw, state_name)
    try:
        server = ViewServer(settings, sources, surprise_threshold, state)
    except ConfigError as err:
        replies.send(("error", str(err)))
        state.close()
        return
    replies.send(("ready", server.url))
    try:
        server.encode_panels(doorbell)
    finally:
        server.close()
        state.close()


def lower_priority() -> None:
    """Run every thread of this process (those the imports started too, and all they start) at
    niceness ``VIEW_NICENESS``, and OpenCV on one thread, so that the view takes a core from
    the model's threads as briefly and as seldom as it can (elsewhere than Linux: unchanged)."""
    cv2.setNumThreads(1)
    if sys.platform.startswith("linux"):
        for thread_id in map(int, os.listdir("/proc/self/task")):   # never raise a priority
            niceness = max(VIEW_NICENESS, os.getpriority(os.PRIO_PROCESS, thread_id))
            os.setpriority(os.PRIO_PROCESS, thread_id, niceness)


@dataclass
class _Tile:
    """The newest JPEG panel of one stream and its number (0: none yet)."""

    jpeg: bytes | None = None
    panel_id: int = 0


class ViewServer:
    """The HTTP server (on its own thread) over the shared state; :meth:`encode_panels` encodes
    panels on the calling thread until the run closes the doorbell."""

    def __init__(self, settings: ViewSettings, sources: Sequence[str],
                 surprise_threshold: float, state: ViewState):
        self.settings, self.sources, self.state = settings, list(sources), state
        self.surprise_threshold = surprise_threshold
        self.metrics = RunMetrics(sources, state.snapshot, lambda i: self.health(i)[0],
                                  rolling_gain_db)
        self._tiles = [_Tile() for _ in sources]
        self._changed = threading.Condition()
        self._closed = False
        try:
            self._server = ThreadingHTTPServer((settings.host, settings.port), _handler(self))
        except OSError as err:
            raise ConfigError(f"--serve {settings.host}:{settings.port}: cannot listen there "
                              f"({err.strerror or err}); choose another port") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="stae-live-view-http")
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def encode_panels(self, doorbell: Connection) -> None:
        """Compose and JPEG-encode each stream's waiting panel whenever the doorbell rings;
        return when it closes."""
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality]
        while os.read(doorbell.fileno(), 4096):
            for index, tile in enumerate(self._tiles):
                frames = self.state.take_panel(index)
                if frames is None:
                    continue
                ok, encoded = cv2.imencode(".jpg", compose_panel(PanelFrames(*frames)), quality)
                if ok:
                    with self._changed:
                        tile.jpeg = encoded.tobytes()
                        tile.panel_id += 1
                        self._changed.notify_all()

    # -- what the handlers ask -------------------------------------------------------------------

    def saw_viewer(self) -> None:
        """A page or panel request came: someone watches (the run composes panels)."""
        self.state.header["viewer_at"] = time.monotonic()

    def health(self, index: int) -> tuple[bool, str]:
        """(healthy, why) of stream ``index``."""
        shot = self.state.snapshot(index)
        if shot.ended == ENDED_WITH_ERROR:
            return False, f"ended: {shot.error}"
        if shot.ended == ENDED_NORMALLY:
            return True, "ended normally"
        if shot.reconnecting:
            return False, "the source is reconnecting"
        if shot.nonfinite:
            return False, "the model's last prediction was not finite (NaN/Inf); state reset"
        if shot.last_step_at is None:
            return True, "starting"
        idle_s = time.monotonic() - shot.last_step_at
        if idle_s > self.settings.stale_s:
            return False, f"no frame for {idle_s:.0f} s"
        return True, "ok"

    def streams_json(self) -> dict[str, Any]:
        """Every stream's numbers, health and recent (frame, score) pairs, and the surprise
        threshold."""
        self.saw_viewer()
        out = []
        for index, source in enumerate(self.sources):
            healthy, why = self.health(index)
            out.append({"stream": index, "source": source, "healthy": healthy, "health": why,
                        **stream_numbers(self.state.snapshot(index))})
        return {"surprise_threshold": self.surprise_threshold, "streams": out}

    def latest_jpeg(self, index: int, after: int = -1, timeout_s: float = 1.0
                    ) -> tuple[int, bytes | None]:
        """(panel id, JPEG) of stream ``index``'s newest panel, waiting up to ``timeout_s``
        for one newer than ``after``."""
        self.saw_viewer()
        tile = self._tiles[index]
        with self._changed:
            self._changed.wait_for(lambda: tile.panel_id > after or self._closed,
                                   timeout=timeout_s)
            return tile.panel_id, tile.jpeg

    @property
    def stream_count(self) -> int:
        return len(self._tiles)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def rolling_gain_db(shot: StreamSnapshot) -> float | None:
    """The mean PSNR gain over copy-last of the stream's last scored frames, dB."""
    return round(statistics.fmean(shot.gains_db), 3) if shot.gains_db else None


def stream_numbers(shot: StreamSnapshot) -> dict[str, Any]:
    """The page's numbers of one stream (latencies in ms, rolling over the last steps)."""
    ms = sorted(shot.infer_ms)
    times = shot.step_at
    return {
        "step": shot.step, "source_frame": shot.source_frame,
        "fps": round((len(times) - 1) / (times[-1] - times[0]), 2)
        if len(times) > 1 and times[-1] > times[0] else None,
        "step_latency_ms_p50": round(ms[len(ms) // 2], 2) if ms else None,
        "step_latency_ms_p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 2)
        if ms else None,
        "dropped_frames": shot.totals["dropped_frames"], "reconnects": shot.totals["reconnects"],
        "state_resets": shot.totals["resets"], "nonfinite_resets": shot.totals["nonfinite_resets"],
        "state_losses": shot.totals["state_losses"], "gain_over_copy_last_db": rolling_gain_db(shot),
        "surprise": shot.surprise, "surprise_events": shot.totals["surprise_events"],
        "out_of_range_steps": shot.totals["out_of_range_steps"],
        "scores": [(frame, round(score, 2)) for frame, score in shot.scores]}


def _handler(view: ViewServer) -> type[BaseHTTPRequestHandler]:
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
