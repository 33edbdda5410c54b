"""The streaming loop behind ``stae run``: sources -> preprocess -> one batched predict -> compose
-> sinks, for one camera or several sharing one model.

Each step takes the newest frame of every source that has one (waiting at most
``batch_timeout_ms`` for the rest, like DeepStream's stream muxer) and runs those streams as one
batched step; a source without a new frame sits the step out and its state does not advance.
Per stream and step it measures preprocess / infer / postprocess time and capture-to-prediction
latency (ms), the PSNR of the previous step's prediction against the frame that actually came (and
of copy-last-frame, the baseline), and it counts dropped frames, state resets and NaN/Inf events.
Each stream's video shows, per frame, actual | predicted (made one step earlier) | error
heat-map. A source that fails for good ends its own stream; the others go on.

A frame that repeats its stream's previous one is, by default, not a model step
(``stae_deploy.runtime.repeated_frames``): the state holds, and the stream emits the frame itself
or its pending prediction, by its cadence; ``repeated_frames="step"`` feeds every frame.
"""
from __future__ import annotations

import functools
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence, TextIO

import cv2
import numpy as np

from stae_deploy.runtime.errors import (BrokenModelError, ConfigError, NonFiniteStateError,
                                        SourceError)
from stae_deploy.runtime.files import partial_path
from stae_deploy.runtime.frames import bgr_to_model_frame, model_frame_to_bgr
from stae_deploy.runtime.media import VideoFileWriter, side_by_side
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.runtime.predictor import StepModel, StreamState
from stae_deploy.runtime.range_guard import RangeGuard, RangeGuardSettings
from stae_deploy.runtime.repeated_frames import REPEAT_MEAN_ABS_DIFF, REPEAT_MODES, FrameCadence
from stae_deploy.runtime.sources import FrameEvent, FrameGrabber
from stae_deploy.runtime.surprise import SurpriseSettings, SurpriseTracker, error_db

HEATMAP_GAIN = 4.0   # |error| in [0, 1] x gain -> colour map
POLL_INTERVAL_S = 0.0005
# A stream warns of its first NaN/Inf reset, then at most once per this many seconds.
NONFINITE_WARNING_INTERVAL_S = 10.0


@dataclass(frozen=True)
class RunOptions:
    """horizon: frames forecast per step (1 = next frame only). max_frames: stop a stream after
    N frames. video/metrics: output paths of a single stream (None = not written). show: an
    OpenCV window. output_fps: frame rate of the written video. batch_timeout_ms: how long a step
    waits for the other sources once one has a frame. frame_timeout_s: a source with no frame
    for this long has failed. max_consecutive_nonfinite: a stream whose model gives NaN/Inf on
    this many steps in a row, each from a freshly reset state, stops the run with
    :class:`BrokenModelError` (the model is broken, not unlucky). repeated_frames: "hold" (a
    frame that repeats the previous one is not a model step; see
    ``stae_deploy.runtime.repeated_frames``) or "step" (every frame is). repeat_threshold: mean
    absolute difference (frames in [0, 1]) up to which a frame counts as repeated. surprise:
    how each frame's prediction error is scored and when an event starts
    (``stae_deploy.runtime.surprise``)."""

    horizon: int = 1
    max_frames: int | None = None
    video: Path | None = None
    metrics: Path | None = None
    show: bool = False
    output_fps: float = 25.0
    batch_timeout_ms: float = 10.0
    frame_timeout_s: float = 30.0
    max_consecutive_nonfinite: int = 3
    repeated_frames: str = "hold"
    repeat_threshold: float = REPEAT_MEAN_ABS_DIFF
    surprise: SurpriseSettings = field(default_factory=SurpriseSettings)
    range_guard: RangeGuardSettings = field(default_factory=RangeGuardSettings)

    def __post_init__(self) -> None:
        if self.repeated_frames not in REPEAT_MODES:
            raise ConfigError(f"repeated_frames: expected one of {REPEAT_MODES}, got "
                              f"{self.repeated_frames!r}")
        if not 0.0 <= self.repeat_threshold < 1.0:
            raise ConfigError(f"repeat_threshold: expected in [0, 1), got {self.repeat_threshold}")
        if self.max_consecutive_nonfinite < 1:
            raise ConfigError(f"max_consecutive_nonfinite: expected >= 1, got "
                              f"{self.max_consecutive_nonfinite}")
        if self.horizon < 1:
            raise ConfigError(f"horizon: expected >= 1, got {self.horizon}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"max_frames: expected >= 1, got {self.max_frames}")
        if self.batch_timeout_ms < 0 or self.frame_timeout_s <= 0:
            raise ConfigError(f"batch_timeout_ms/frame_timeout_s: expected >= 0 and > 0, got "
                              f"{self.batch_timeout_ms} and {self.frame_timeout_s}")


@dataclass(frozen=True)
class StreamOutputs:
    """Where one stream's video and per-step metrics (JSON lines) go (None = not written)."""

    video: Path | None = None
    metrics: Path | None = None


@dataclass
class RunSummary:
    steps: int = 0
    dropped_frames: int = 0
    resets: int = 0
    nonfinite_resets: int = 0
    state_losses: int = 0               # the state's host lost it (a served model's restart)
    reconnects: int = 0                 # source reconnects
    surprise_events: int = 0
    repeated_frames: int = 0
    out_of_range_steps: int = 0         # steps whose state left its recorded range
    infer_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    psnr_db: list[float] = field(default_factory=list)
    copy_last_psnr_db: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    error: str | None = None            # why the source ended early (None: it ended normally)

    def to_dict(self) -> dict[str, Any]:
        def median(values: list[float]) -> float | None:
            return round(statistics.median(values), 2) if values else None

        return {"steps": self.steps, "dropped_frames": self.dropped_frames,
                "resets": self.resets, "nonfinite_resets": self.nonfinite_resets,
                "state_losses": self.state_losses, "reconnects": self.reconnects,
                "surprise_events": self.surprise_events,
                "repeated_frames": self.repeated_frames,
                "out_of_range_steps": self.out_of_range_steps,
                "infer_ms_median": median(self.infer_ms),
                "capture_to_prediction_ms_median": median(self.latency_ms),
                "capture_to_prediction_ms_max": round(max(self.latency_ms), 2)
                if self.latency_ms else None,
                "psnr_db_mean": round(float(np.mean(self.psnr_db)), 3) if self.psnr_db else None,
                "copy_last_psnr_db_mean": round(float(np.mean(self.copy_last_psnr_db)), 3)
                if self.copy_last_psnr_db else None,
                "fps": round(self.steps / self.wall_s, 2) if self.wall_s else None,
                **({"error": self.error} if self.error else {})}


@dataclass
class Throughput:
    """All streams together: frames predicted, batched runs, wall time (s)."""

    frames: int = 0
    runs: int = 0
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "batched_steps": self.runs,
                "mean_batch": round(self.frames / self.runs, 2) if self.runs else None,
                "frames_per_s": round(self.frames / self.wall_s, 2) if self.wall_s else None,
                "wall_s": round(self.wall_s, 2)}


class StepObserver(Protocol):
    """Something that watches a run step by step: the live view, the surprise event log.

    wants_panel(i): whether stream i's next step should hand it the frames of its actual |
    predicted | error panel (say no when nobody looks). on_step(i, record, summary, frames):
    after each step of stream i: the step's metrics record (see :class:`_StreamLoop`), the
    stream's running summary, and, when asked for, the :class:`PanelFrames` (the observer
    composes the panel with :func:`compose_panel` where it suits it, off the run's thread if it
    likes). on_end(i, summary): stream i is done (``summary.error`` says why if it failed).
    """

    def wants_panel(self, index: int) -> bool: ...

    def on_step(self, index: int, record: dict[str, Any], summary: RunSummary,
                frames: PanelFrames | None) -> None: ...

    def on_end(self, index: int, summary: RunSummary) -> None: ...


def error_heatmap(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """|predicted - actual| of two RGB (3, H, W) frames as a BGR uint8 heat-map (H, W, 3)."""
    error = np.abs(np.clip(predicted, 0, 1) - actual).mean(axis=0) * HEATMAP_GAIN
    level = (np.clip(error, 0, 1) * 255).astype(np.uint8)
    return cv2.LUT(cv2.merge([level, level, level]), _heatmap_colours())


@functools.cache
def _heatmap_colours() -> np.ndarray:
    """OpenCV's inferno colour map as a (256, 1, 3) BGR lookup table (``cv2.applyColorMap``
    builds it anew on every call, which costs more than the rest of the heat-map)."""
    return cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_INFERNO)


class PanelFrames(NamedTuple):
    """What a step's panel shows: the frame that arrived and the prediction made for it, model
    frames RGB float32 ``(3, H, W)`` in [0, 1] (the prediction unclipped). Valid only during
    :meth:`StepObserver.on_step`: copy what you keep."""

    actual: np.ndarray
    predicted: np.ndarray


def compose_panel(frames: PanelFrames) -> np.ndarray:
    """The actual | predicted | error heat-map panel of ``frames``, BGR uint8
    ``(H + caption, 3 W, 3)``."""
    return side_by_side([
        ("actual", model_frame_to_bgr(frames.actual)),
        ("predicted", model_frame_to_bgr(frames.predicted)),
        (f"|error| x{HEATMAP_GAIN:g}", error_heatmap(frames.predicted, frames.actual))])


class JsonLinesWriter:
    """Per-step records as JSON lines, written under the file's partial name and renamed to the
    final name by :meth:`close` (same policy as :class:`stae_deploy.runtime.media.VideoFileWriter`: a killed
    run leaves only the partial name; :meth:`abort` keeps what was written under it)."""

    def __init__(self, path: Path):
        self.path, self.partial_path = path, partial_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = open(self.partial_path, "w")

    def write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.partial_path.replace(self.path)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _StreamLoop:
    """One source's share of the loop: its grabber, its model stream, metrics and sinks."""

    def __init__(self, index: int, grabber: FrameGrabber, stream: StreamState,
                 outputs: StreamOutputs, options: RunOptions,
                 observers: Sequence[StepObserver] = ()):
        self.index, self.grabber, self.stream, self.options = index, grabber, stream, options
        self.observers = list(observers)
        self.surprise = SurpriseTracker(options.surprise)
        self.summary = RunSummary()
        self.done = False
        self.previous_prediction: np.ndarray | None = None
        self.previous_frame: np.ndarray | None = None
        self.last_frame_at = time.perf_counter()
        self.consecutive_nonfinite = 0
        self.nonfinite_warned_at: float | None = None
        self.range_warned: set[str] = set()           # tensors the range guard warned of
        self.cadence = FrameCadence(options.repeated_frames, options.repeat_threshold)
        self.pending: np.ndarray | None = None      # the model's latest forecast (K, 3, H, W)
        self.video = VideoFileWriter(outputs.video, options.output_fps) if outputs.video else None
        self.metrics = JsonLinesWriter(outputs.metrics) if outputs.metrics else None

    def poll(self, now: float) -> FrameEvent | None:
        """The source's newest frame, or None; marks the stream done at its end or failure."""
        if self.options.max_frames is not None and self.summary.steps >= self.options.max_frames:
            self.done = True
            return None
        try:
            event = self.grabber.poll()
            if event is None and not self.grabber.finished \
                    and now - self.last_frame_at > self.options.frame_timeout_s:
                raise SourceError(f"{self.grabber.config.uri}: no frame for "
                                  f"{self.options.frame_timeout_s:.0f} s")
        except SourceError as err:
            self.summary.error, self.done = str(err), True
            return None
        self.done = self.grabber.finished
        if event is not None:
            self.last_frame_at = now
            if event.reset:
                self.restart()
        return event

    def restart(self) -> None:
        """The stream's state back to zero and everything scored against it forgotten."""
        self.stream.reset()
        self.cadence.reset()
        self.surprise.reset()
        self.summary.resets += 1
        self.previous_prediction = self.previous_frame = self.pending = None

    def guard_state(self, guard: RangeGuard, extremes: dict[str, tuple[float, float]],
                    log: Callable[[str], None]) -> list[str]:
        """Count a step whose state (``extremes``: name -> (min, max)) left ``guard``'s limits
        and warn once per tensor; returns the tensors outside (the caller restarts the stream
        in "reset" mode, after the step is recorded)."""
        excursions = guard.excursions(extremes)
        if excursions:
            self.summary.out_of_range_steps += 1
            for excursion in excursions:
                if excursion.tensor not in self.range_warned:
                    self.range_warned.add(excursion.tensor)
                    log(f"warning: stream {self.index} ({self.grabber.config.uri}), step "
                        f"{self.summary.steps + 1}: {excursion.describe(guard.ranges)}; the model "
                        f"runs on a state it was not calibrated or exported on (an INT8 engine "
                        f"clips such values)"
                        + ("; the stream restarts from the zero state" if
                           guard.settings.mode == "reset" else
                           "; --range-guard reset restarts such a stream"))
        return [excursion.tensor for excursion in excursions]

    def emit(self, frame: np.ndarray, stepped: np.ndarray | NonFiniteStateError | None
             ) -> np.ndarray | NonFiniteStateError:
        """What the stream outputs after ``frame``: ``stepped`` is the model's forecast for it,
        or None when the frame repeated and was not a step (see :class:`FrameCadence`)."""
        if isinstance(stepped, NonFiniteStateError):
            self.pending = None
            return stepped
        if stepped is not None:
            self.pending = stepped
        if self.pending is None:                      # a repeat before any step: copy it
            return np.broadcast_to(frame, (self.options.horizon, *frame.shape))
        return self.cadence.emitted(frame, self.pending)

    def record(self, event: FrameEvent, frame: np.ndarray,
               result: np.ndarray | NonFiniteStateError, times: tuple[float, float, float],
               log: Callable[[str], None], repeated: bool = False,
               out_of_range: Sequence[str] = ()) -> dict[str, Any]:
        """Score the previous prediction against ``frame``, write the sinks, update the summary.
        ``out_of_range``: the state tensors the range guard found outside their range."""
        t0, t1, t2 = times
        summary, options = self.summary, self.options
        summary.repeated_frames += repeated
        state_lost = self.stream.state_losses > summary.state_losses
        summary.state_losses = self.stream.state_losses
        nonfinite = isinstance(result, NonFiniteStateError)
        if nonfinite:
            summary.nonfinite_resets += 1
            self._count_nonfinite(result, t2, log)
        else:
            self.consecutive_nonfinite = 0
        record: dict[str, Any] = {"step": summary.steps + 1, "source_frame": event.index,
                                  "reset": event.reset, "nonfinite": nonfinite,
                                  "repeated": repeated, "state_lost": state_lost}
        if out_of_range:
            record["state_out_of_range"] = list(out_of_range)
        frames = None
        watching = [o for o in self.observers if o.wants_panel(self.index)]
        if self.previous_prediction is not None and self.previous_frame is not None:
            summary.psnr_db.append(psnr_db(np.clip(self.previous_prediction, 0, 1), frame))
            summary.copy_last_psnr_db.append(psnr_db(self.previous_frame, frame))
            record.update(psnr_db=round(summary.psnr_db[-1], 3),
                          copy_last_psnr_db=round(summary.copy_last_psnr_db[-1], 3))
            if not repeated:                 # a repeat brings nothing new to be surprised by
                score, started = self.surprise.observe(event.index,
                                                       error_db(summary.psnr_db[-1]))
                summary.surprise_events += started is not None
                record.update(surprise=None if score is None else round(score, 3),
                              surprise_event=started is not None)
            frames = PanelFrames(frame, self.previous_prediction)
            if self.video is not None or options.show:     # compose only for a sink
                panel = compose_panel(frames)
                if self.video is not None:
                    self.video.write(panel)
                if options.show:
                    cv2.imshow(f"stae run: stream {self.index}", panel)
                    cv2.waitKey(1)
        self.previous_prediction = None if isinstance(result, NonFiniteStateError) else result[0]
        self.previous_frame = frame
        t3 = time.perf_counter()
        summary.steps += 1
        summary.dropped_frames = self.grabber.dropped
        summary.reconnects = self.grabber.reconnects
        summary.infer_ms.append((t2 - t1) * 1e3)
        summary.latency_ms.append((t2 - event.captured_at) * 1e3)
        record.update(preprocess_ms=round((t1 - t0) * 1e3, 3), infer_ms=round((t2 - t1) * 1e3, 3),
                      postprocess_ms=round((t3 - t2) * 1e3, 3),
                      capture_to_prediction_ms=round(summary.latency_ms[-1], 3),
                      dropped_frames=self.grabber.dropped)
        if self.metrics is not None:
            self.metrics.write(record)
        for observer in self.observers:
            observer.on_step(self.index, record, summary,
                             frames if observer in watching else None)
        return record

    def _count_nonfinite(self, error: NonFiniteStateError, now: float,
                         log: Callable[[str], None]) -> None:
        """Warn (rate-limited) of a NaN/Inf reset; raise :class:`BrokenModelError` once
        ``max_consecutive_nonfinite`` steps in a row have failed from a reset state."""
        self.consecutive_nonfinite += 1
        limit = self.options.max_consecutive_nonfinite
        if self.consecutive_nonfinite >= limit:
            raise BrokenModelError(
                f"stream {self.index}: the model produced NaN/Inf on {limit} steps in a row, each "
                f"from a freshly reset (zero) state: it is broken (damaged weights or a bad "
                f"export), not unlucky; check it with `stae check MODEL`")
        if self.nonfinite_warned_at is None \
                or now - self.nonfinite_warned_at >= NONFINITE_WARNING_INTERVAL_S:
            self.nonfinite_warned_at = now
            log(f"warning: stream {self.index}: {error} (this warning: at most every "
                f"{NONFINITE_WARNING_INTERVAL_S:.0f} s)")

    def close(self, completed: bool) -> None:
        """Give the outputs their final names (``completed``), or keep them partial."""
        for sink in (self.video, self.metrics):
            if sink is not None:
                sink.close() if completed else sink.abort()


def run_streams(predictor: StepModel, grabbers: Sequence[FrameGrabber], options: RunOptions,
                outputs: Sequence[StreamOutputs] | None = None,
                on_step: Callable[[int, RunSummary, dict[str, Any]], None] | None = None,
                log: Callable[[str], None] = print, observers: Sequence[StepObserver] = ()
                ) -> tuple[list[RunSummary], Throughput]:
    """Drive ``predictor`` over every grabber until each source ends, fails or reaches
    ``max_frames`` (or Ctrl-C). ``outputs[i]`` are stream i's sinks; ``observers`` watch every
    step (:class:`StepObserver`). Returns one summary per stream (a failed source's ``error``
    says why) and the combined throughput."""
    outputs = list(outputs) if outputs is not None else [StreamOutputs() for _ in grabbers]
    if len(outputs) != len(grabbers):
        raise ConfigError(f"outputs: {len(outputs)} for {len(grabbers)} sources")
    loops = [_StreamLoop(i, g, predictor.new_stream(g.config.uri), o, options, observers)
             for i, (g, o) in enumerate(zip(grabbers, outputs))]
    ranges = predictor.metadata.state_ranges
    guard = (RangeGuard(ranges, options.range_guard)
             if ranges is not None and options.range_guard.mode != "off" else None)
    if guard is not None and loops and predictor.state_extremes(loops[0].stream) is None:
        log("range guard: not checked: this model keeps its state on the device or a server, "
            "and reading it would copy it every step")
        guard = None
    throughput, start, completed = Throughput(), time.perf_counter(), False
    try:
        while True:
            batch = _gather(loops, options.batch_timeout_ms / 1e3)
            if not batch:
                break
            t0 = time.perf_counter()
            frames = [bgr_to_model_frame(event.frame, predictor.frame_hw) for _, event in batch]
            repeated = [loop.cadence.observe(frame) for (loop, _), frame in zip(batch, frames)]
            stepping = [i for i, (loop, _) in enumerate(batch)
                        if not loop.cadence.skips_step(repeated[i])]
            t1 = time.perf_counter()
            stepped: list[np.ndarray | NonFiniteStateError | None] = [None] * len(batch)
            if stepping:
                for i, result in zip(stepping, predictor.step_many(
                        [batch[i][0].stream for i in stepping], [frames[i] for i in stepping],
                        options.horizon)):
                    stepped[i] = result
                throughput.runs += 1
            t2 = time.perf_counter()
            throughput.frames += len(batch)
            for (loop, event), frame, result, again in zip(batch, frames, stepped, repeated):
                outside = []
                if guard is not None and isinstance(result, np.ndarray):
                    extremes = predictor.state_extremes(loop.stream)
                    outside = loop.guard_state(guard, extremes, log) if extremes else []
                record = loop.record(event, frame, loop.emit(frame, result), (t0, t1, t2), log,
                                     again, outside)
                if outside and guard is not None and guard.settings.mode == "reset":
                    loop.restart()
                if on_step is not None:
                    on_step(loop.index, loop.summary, record)
        completed = True
    except KeyboardInterrupt:          # how a camera run normally ends: keep what was written
        log("interrupted: closing the outputs")
        completed = True
    finally:
        throughput.wall_s = time.perf_counter() - start
        for loop in loops:
            loop.summary.wall_s = throughput.wall_s
            loop.close(completed)
            for observer in observers:
                observer.on_end(loop.index, loop.summary)
    return [loop.summary for loop in loops], throughput


def _gather(loops: list[_StreamLoop], timeout_s: float) -> list[tuple[_StreamLoop, FrameEvent]]:
    """The next batch: a new frame from every live source, or from those that have one once
    ``timeout_s`` has passed since the first arrived. Empty when every source is done."""
    batch: dict[int, FrameEvent] = {}
    first_at: float | None = None
    while True:
        now = time.perf_counter()
        for loop in loops:
            if not loop.done and loop.index not in batch:
                event = loop.poll(now)
                if event is not None:
                    batch[loop.index] = event
                    first_at = now if first_at is None else first_at
        waiting = [loop for loop in loops if not loop.done and loop.index not in batch]
        if not waiting or (first_at is not None and now - first_at >= timeout_s):
            return [(loops[i], batch[i]) for i in sorted(batch)]
        time.sleep(POLL_INTERVAL_S)


def run_stream(predictor: StepModel, grabber: FrameGrabber, options: RunOptions,
               on_step: Callable[[RunSummary, dict[str, Any]], None] | None = None,
               log: Callable[[str], None] = print) -> RunSummary:
    """One source: :func:`run_streams` with ``options.video``/``options.metrics`` as its sinks.
    Raises :class:`SourceError` if the source failed (after closing the outputs)."""
    [summary], _ = run_streams(
        predictor, [grabber], options, [StreamOutputs(options.video, options.metrics)],
        on_step=None if on_step is None else (lambda _, s, r: on_step(s, r)), log=log)
    if summary.error is not None:
        raise SourceError(summary.error)
    return summary
