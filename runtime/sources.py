"""Video sources through OpenCV: a file, a camera index, an RTSP/HTTP URL or a GStreamer pipeline.

A :class:`FrameGrabber` reads on its own thread and hands the consumer frames:
* live sources (and files with ``realtime=True``, paced at their frame rate) keep only the newest
  frame: a slow consumer gets the latest frame, never a backlog, and every frame it never saw
  is counted in ``dropped``;
* files by default deliver every frame in order (offline processing, nothing dropped).
When a source fails mid-stream (camera unplugged, network gone, file truncated) the grabber
reconnects with exponential back-off; the first frame after a reconnect (or a ``loop`` restart)
carries ``reset=True`` so the consumer restarts the model's state. If the source does not come
back, :meth:`FrameGrabber.read` raises :class:`SourceError` with what happened.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import cv2
import numpy as np

from stae_deploy.runtime.errors import ConfigError, SourceError
from stae_deploy.runtime.files import sniff_format


@dataclass(frozen=True)
class SourceConfig:
    """uri: file path, camera index ("0"), rtsp://, http(s)://, or a GStreamer pipeline ("... ! appsink").
    loop: restart a file at its end. realtime: pace a file at its frame rate and drop stale frames
    like a camera (None: files unpaced, live sources latest-frame). reconnect_attempts / backoff_s:
    how hard to try to get a lost source back (back-off doubles up to max_backoff_s).
    network_timeout_s: how long OpenCV may wait for a URL source to open or deliver a frame
    before that attempt counts as failed (OpenCV's own default is 30 s)."""

    uri: str
    loop: bool = False
    realtime: bool | None = None
    reconnect_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    network_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.uri:
            raise ConfigError("uri: an input source is required")
        if self.reconnect_attempts < 0 or self.backoff_s < 0:
            raise ConfigError(f"reconnect_attempts/backoff_s must be >= 0, got "
                              f"{self.reconnect_attempts} and {self.backoff_s}")
        if not self.network_timeout_s > 0:
            raise ConfigError(f"network_timeout_s: expected > 0 seconds, got "
                              f"{self.network_timeout_s}")

    @property
    def kind(self) -> str:
        """"camera", "url", "gstreamer" or "file"."""
        if self.uri.isdigit():
            return "camera"
        if "://" in self.uri and not self.uri.startswith("file://"):
            return "url"
        if "!" in self.uri:
            return "gstreamer"
        return "file"

    @property
    def drops_stale_frames(self) -> bool:
        return self.kind != "file" if self.realtime is None else self.realtime


@dataclass
class FrameEvent:
    """One captured frame: BGR uint8 (H, W, 3), its index in the source, and when it was read."""

    frame: np.ndarray
    index: int
    captured_at: float          # time.perf_counter() seconds
    reset: bool                 # first frame after a reconnect or a loop restart


_END = object()


class FrameGrabber:
    """Reads a source on a background thread; see the module docstring for the policies."""

    def __init__(self, config: SourceConfig, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.dropped = 0
        self.finished = False                    # the end of a file was read
        self.reconnects = 0
        self.reconnecting = False                # between losing the source and getting it back
        self._slot: object | None = None
        self._slot_fresh = False                 # written and not yet read
        self._condition = threading.Condition()
        self._stop = threading.Event()
        self._capture: cv2.VideoCapture | None = None
        if config.kind == "gstreamer" and not _has_gstreamer():   # permanent: no point retrying
            raise SourceError(
                f"{config.uri}: this OpenCV has no GStreamer support (pip wheels never do); on "
                f"Jetson use JetPack's cv2 in a venv made with --system-site-packages")
        try:
            self._capture = self._open()
        except SourceError:
            if config.kind == "file":
                raise
            self._reconnect(0)                    # a live source may come up in a moment
        assert self._capture is not None
        self.fps = self._capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._thread = threading.Thread(target=self._run, name="stae-frame-grabber", daemon=True)
        self._thread.start()

    def read(self, timeout_s: float = 30.0) -> FrameEvent | None:
        """The next frame to process; None at the end of a file. Raises :class:`SourceError`
        when no frame comes within ``timeout_s`` seconds, or the source is lost for good."""
        with self._condition:
            if not self._condition.wait_for(lambda: self._slot_fresh, timeout=timeout_s):
                raise SourceError(f"{self.config.uri}: no frame for {timeout_s:.0f} s")
        return self._take()

    def poll(self) -> FrameEvent | None:
        """The newest frame if one came since the last call, else None (never waits). At the
        end of a file it returns None and sets :attr:`finished`. Raises :class:`SourceError`."""
        return self._take()

    def _take(self) -> FrameEvent | None:
        with self._condition:
            if not self._slot_fresh:
                return None
            item, self._slot_fresh = self._slot, False
            self._condition.notify_all()
        if item is _END:
            self.finished = True
            return None
        if isinstance(item, SourceError):
            self.finished = True
            raise item
        assert isinstance(item, FrameEvent)
        return item

    def close(self) -> None:
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        self._thread.join(timeout=5)
        if self._capture is not None:
            self._capture.release()

    def __enter__(self) -> "FrameGrabber":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the capture thread -------------------------------------------------------------------

    def _run(self) -> None:
        index, reset, started = 0, False, time.perf_counter()
        try:
            while not self._stop.is_set():
                assert self._capture is not None
                ok, frame = self._capture.read()
                if ok:
                    if self.config.drops_stale_frames and self.config.kind == "file":
                        delay = started + index / self.fps - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)     # a file paced like the camera that made it
                    self._publish(FrameEvent(frame, index, time.perf_counter(), reset))
                    index, reset = index + 1, False
                    continue
                if self.config.kind == "file" and self.frame_count and index >= self.frame_count:
                    if not self.config.loop:
                        self._publish(_END)
                        return
                    self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    index, reset, started = 0, True, time.perf_counter()
                    continue
                self._reconnect(index)
                reset, started = True, time.perf_counter() - index / self.fps
        except SourceError as err:
            self._publish(err)

    def _publish(self, item: object) -> None:
        with self._condition:
            if not self.config.drops_stale_frames or not isinstance(item, FrameEvent):
                self._condition.wait_for(lambda: not self._slot_fresh or self._stop.is_set())
            elif self._slot_fresh:
                self.dropped += 1                 # the consumer never saw the previous frame
            self._slot, self._slot_fresh = item, True
            self._condition.notify_all()

    def _reconnect(self, index: int) -> None:
        self.reconnecting = True
        try:
            self._try_reconnecting(index)
        finally:
            self.reconnecting = False

    def _try_reconnecting(self, index: int) -> None:
        uri, attempts = self.config.uri, self.config.reconnect_attempts
        never_opened = self._capture is None
        what = "cannot be opened" if never_opened else f"lost after frame {index}"
        self.log(f"source {uri} {what}; reconnecting (up to {attempts} attempts)")
        if self._capture is not None:
            self._capture.release()
        backoff, last_error = self.config.backoff_s, "no attempt made"
        for attempt in range(1, attempts + 1):
            if self._stop.wait(backoff):
                return
            backoff = min(2 * backoff, self.config.max_backoff_s)
            try:
                capture = self._open()
            except SourceError as err:
                last_error = str(err).removeprefix(f"{uri}: ")   # the message names it once
                self.log(f"  attempt {attempt}/{attempts} failed: {last_error}")
                continue
            if self.config.kind == "file":        # resume where the file broke off
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                if capture.get(cv2.CAP_PROP_POS_FRAMES) != index or not capture.grab():
                    capture.release()
                    last_error = f"frame {index} can no longer be read (file truncated?)"
                    self.log(f"  attempt {attempt}/{attempts} failed: {last_error}")
                    continue
                capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._capture = capture
            self.reconnects += 1
            self.log(f"  reconnected to {uri} on attempt {attempt}; the model state is reset")
            return
        happened = "could not be opened" if never_opened else \
            f"the source disappeared after frame {index} and did not come back"
        raise SourceError(f"{uri}: {happened} after {attempts} reconnect attempts "
                          f"(last: {last_error})")

    def _open(self) -> cv2.VideoCapture:
        """One attempt to open the source; :class:`SourceError` saying why it failed."""
        config = self.config
        kind = config.kind
        if kind == "file":
            _check_video_file(Path(config.uri.removeprefix("file://")), config.uri)
        started = time.perf_counter()
        if kind == "camera":
            capture = cv2.VideoCapture(int(config.uri))
        elif kind == "gstreamer":
            capture = cv2.VideoCapture(config.uri, cv2.CAP_GSTREAMER)
        elif kind == "url":          # bounded: OpenCV's FFmpeg would wait 30 s for a silent host
            timeout_ms = max(1, round(config.network_timeout_s * 1000))
            capture = cv2.VideoCapture(config.uri, cv2.CAP_FFMPEG,
                                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                        cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
        else:
            capture = cv2.VideoCapture(config.uri.removeprefix("file://"), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            if kind == "file":
                why = _not_a_video(Path(config.uri.removeprefix("file://")))
            elif kind == "url":
                why = _url_failure(config.uri, time.perf_counter() - started,
                                   config.network_timeout_s)
            else:
                why = ""
            raise SourceError(f"{config.uri}: OpenCV cannot open this {kind} source{why}")
        return capture


def _check_video_file(path: Path, uri: str) -> None:
    """Raise :class:`SourceError` naming ``uri`` unless ``path`` is a non-empty regular file."""
    if path.is_dir():
        raise SourceError(f"{uri}: is a directory; expected a video file")
    if not path.is_file():
        raise SourceError(f"{uri}: no such video file")
    if path.stat().st_size == 0:
        raise SourceError(f"{uri}: is empty (0 bytes); expected a video file")


def _not_a_video(path: Path) -> str:
    """Why OpenCV may have refused a file, for the error message (see ``sniff_format``)."""
    kind = sniff_format(path)
    if kind is not None and not kind.endswith("video"):
        return f": it looks like {kind}, not a video"
    return ": not a video, or a container/codec this OpenCV cannot decode"


def _url_failure(uri: str, elapsed_s: float, timeout_s: float) -> str:
    """Why a URL did not open: a refused/unreachable host, or a host that did not answer in time.

    Probes the host's TCP port once (only after OpenCV has failed), so the message can tell a
    camera that is down from a wrong path or credentials.
    """
    parts = urlsplit(uri)
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:                      # a port that is not a number
        return ": the URL's port is not a number"
    if host is None or port is None:
        return ""
    if elapsed_s >= 0.9 * timeout_s:
        return f": no stream from {host}:{port} within network_timeout_s={timeout_s:g} s"
    try:
        socket.create_connection((host, port), timeout=min(2.0, timeout_s)).close()
    except OSError as err:
        return f": cannot connect to {host}:{port} ({err.strerror or err})"
    return (f": {host}:{port} accepts connections but did not serve a stream (wrong path, "
            f"credentials or codec?)")


_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443}


def _has_gstreamer() -> bool:
    """Whether this cv2 was built with GStreamer (``cv2.getBuildInformation()``)."""
    return any(line.strip().startswith("GStreamer:") and "YES" in line
               for line in cv2.getBuildInformation().splitlines())
