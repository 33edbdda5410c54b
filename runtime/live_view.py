"""A live web view of a ``stae run`` (``--serve 127.0.0.1:8080``): one tile per stream, the
Prometheus metrics and a health check, served by a process of its own.

    GET /                  the page: per stream, actual | predicted | error heat-map live
                           (MJPEG), its numbers and a plot of its surprise score; no asset
                           comes from the internet
    GET /stream/<i>.mjpg   stream i's panels as MJPEG (multipart/x-mixed-replace)
    GET /frame/<i>.jpg     stream i's latest panel as one JPEG
    GET /api/streams       every stream's numbers and recent surprise scores, JSON
    GET /metrics           Prometheus text format (:mod:`stae_deploy.runtime.run_metrics`)
    GET /healthz           per-stream health, JSON; 200 when every stream is healthy, else 503

A stream is unhealthy while its source is reconnecting, when it has had no frame for
``stale_s``, when its last step gave NaN/Inf, and once it has ended with an error.

What it costs the run: each step writes its numbers into shared memory
(:mod:`stae_deploy.runtime.live_view_state`, no lock, no system call); only while someone
watches (a request in the last few seconds), and at most ``max_fps`` per stream, a step also
copies its actual and predicted frames there and rings the view's doorbell. Everything else
(composing the panel, JPEG, HTTP, the metrics' text) happens in the view's process
(:mod:`stae_deploy.runtime.live_view_server`), at a low priority and without the run's GIL. The
server binds 127.0.0.1 unless another address is asked for explicitly (:class:`ViewSettings`).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.live_view_server import serve_view
from stae_deploy.runtime.live_view_state import SLOT_FREE, SLOT_FULL, ViewState
from stae_deploy.runtime.run_metrics import COUNTERS
from stae_deploy.runtime.sources import FrameGrabber
from stae_deploy.runtime.streaming import PanelFrames, RunSummary

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
VIEWER_IDLE_S = 5.0          # no request for this long: nobody is watching
START_TIMEOUT_S = 60.0       # the view's process listens within this
DEFAULT_PANELS_PER_S = 5.0   # the view's panels per second and stream, at most (--serve-fps)
HEALTH_POLL_S = 0.2          # how often the sources' reconnecting flags are copied over


@dataclass(frozen=True)
class ViewSettings:
    """host, port: where the page is served (port 0: any free port). allow_remote: bind an
    address other than loopback (off unless asked for). max_fps: panels per second and stream
    (> 0). jpeg_quality: 1..100. stale_s: a stream with no frame for this long is unhealthy."""

    host: str = "127.0.0.1"
    port: int = 8080
    allow_remote: bool = False
    max_fps: float = DEFAULT_PANELS_PER_S
    jpeg_quality: int = 80
    stale_s: float = 5.0

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK_HOSTS and not self.allow_remote:
            raise ConfigError(f"--serve {self.host}:{self.port}: this address can be reached "
                              f"from other machines; pass --serve-remote to allow it, or serve "
                              f"on 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: expected 0..65535, got {self.port}")
        if not self.max_fps > 0:
            raise ConfigError(f"max_fps (--serve-fps): expected panels per second > 0, got "
                              f"{self.max_fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality: expected 1..100, got {self.jpeg_quality}")
        if not self.stale_s > 0:
            raise ConfigError(f"stale_s: expected seconds > 0, got {self.stale_s}")

    @classmethod
    def parse(cls, text: str, allow_remote: bool = False,
              max_fps: float = DEFAULT_PANELS_PER_S) -> "ViewSettings":
        """``HOST:PORT`` (or ``:PORT``, meaning 127.0.0.1) from the command line."""
        host, _, port = text.rpartition(":")
        if not port.isdigit():
            raise ConfigError(f"--serve {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        return cls(host or "127.0.0.1", int(port), allow_remote, max_fps)


class LiveView:
    """The view's process and what the run tells it; a context manager. The streaming loop
    calls :meth:`wants_panel` and :meth:`on_step` (it is a ``StepObserver``)."""

    def __init__(self, settings: ViewSettings, sources: Sequence[str],
                 surprise_threshold: float, frame_hw: tuple[int, int]):
        """``frame_hw``: the model's frame (height, width), the panels' size."""
        self.settings = settings
        self._state = ViewState(len(sources), frame_hw)
        self._closed = threading.Event()
        self._health_thread: threading.Thread | None = None
        context = multiprocessing.get_context("spawn")      # never fork a process with threads
        doorbell_reader, self._doorbell = context.Pipe(duplex=False)
        replies, replies_writer = context.Pipe(duplex=False)
        self._process = context.Process(
            target=serve_view, name="stae-live-view", daemon=True,
            args=(settings, list(sources), surprise_threshold, frame_hw, self._state.name,
                  doorbell_reader, replies_writer))
        self._process.start()
        doorbell_reader.close()
        replies_writer.close()
        try:
            if not replies.poll(START_TIMEOUT_S):
                raise ConfigError(f"--serve: the live view's process did not start listening "
                                  f"within {START_TIMEOUT_S:.0f} s")
            kind, text = replies.recv()
        except EOFError:
            self._process.join()
            kind, text = "error", (f"--serve: the live view's process ended at start (exit "
                                   f"code {self._process.exitcode})")
        except ConfigError as err:
            kind, text = "error", str(err)
        finally:
            replies.close()
        if kind == "error":
            self.close()
            raise ConfigError(text)
        self.url: str = text
        os.set_blocking(self._doorbell.fileno(), False)     # the run never waits on the view

    @property
    def server_pid(self) -> int | None:
        """The view process' id."""
        return self._process.pid

    def watch_sources(self, grabbers: Sequence[FrameGrabber]) -> None:
        """The streams' grabbers, whose reconnecting flags the health check shows (copied over
        every ``HEALTH_POLL_S`` by a thread of this process)."""
        def copy_flags() -> None:
            while not self._closed.wait(HEALTH_POLL_S):
                for stream, grabber in zip(self._state.streams, grabbers):
                    stream["reconnecting"] = grabber.reconnecting

        self._health_thread = threading.Thread(target=copy_flags, daemon=True,
                                               name="stae-live-view-health")
        self._health_thread.start()

    # -- the streaming loop's side ---------------------------------------------------------------

    def watched(self) -> bool:
        """Whether someone is watching: a page or panel request in the last few seconds."""
        return time.monotonic() - float(self._state.header["viewer_at"]) < VIEWER_IDLE_S

    def wants_panel(self, index: int) -> bool:
        """Whether stream ``index``'s next step should hand over its panel frames: someone is
        watching, the view has taken the last ones and they are at least 1/max_fps old."""
        stream = self._state.streams[index]
        return (self.watched() and stream["panel_slot"] == SLOT_FREE
                and time.monotonic() - stream["panel_at"] >= 1.0 / self.settings.max_fps)

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                frames: PanelFrames | None) -> None:
        """Stream ``index`` made a step: its metrics ``record``, its running ``summary`` and,
        when :meth:`wants_panel` said so, its panel frames (copied to the view)."""
        now = time.monotonic()
        totals = [summary.steps if key == "frames" else getattr(summary, key)
                  for key in COUNTERS]
        self._state.record_step(index, record, totals, now)
        if frames is None:
            return
        panel = self._state.panels[index]
        if frames.actual.shape != panel.shape[1:]:
            raise ConfigError(f"live view: stream {index}'s frames are {frames.actual.shape}, "
                              f"expected {panel.shape[1:]} (the frame_hw it was made for)")
        panel[0], panel[1] = frames.actual, frames.predicted
        stream = self._state.streams[index]
        stream["panel_at"], stream["panel_slot"] = now, SLOT_FULL
        try:
            os.write(self._doorbell.fileno(), b"\0")
        except (BlockingIOError, BrokenPipeError):
            pass        # the view is behind (it has a ring pending) or gone: the run goes on

    def on_end(self, index: int, summary: RunSummary) -> None:
        """Stream ``index`` ended (``summary.error`` says why, None: normally)."""
        self._state.record_end(index, summary.error)

    def close(self) -> None:
        """Stop the view's process (closing the doorbell tells it to) and free the shared
        memory."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._doorbell.close()
        self._process.join(timeout=10.0)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        if self._health_thread is not None:
            self._health_thread.join()
        self._state.close()

    def __enter__(self) -> "LiveView":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
