"""The streaming loop behind ``stae run``: source -> preprocess -> predict -> compose -> sinks.

Per step it measures preprocess / infer / postprocess time and capture-to-prediction latency
(ms), the PSNR of the previous step's prediction against the frame that actually came (and of
copy-last-frame, the baseline), and it counts dropped frames, state resets and NaN/Inf events.
The video shows, per frame, actual | predicted (made one step earlier) | error heat-map.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import cv2
import numpy as np

from runtime.errors import NonFiniteStateError
from runtime.frames import bgr_to_model_frame, model_frame_to_bgr
from runtime.media import VideoFileWriter, side_by_side
from runtime.metrics import psnr_db
from runtime.predictor import Predictor
from runtime.sources import FrameGrabber

HEATMAP_GAIN = 4.0   # |error| in [0, 1] x gain -> colour map


@dataclass(frozen=True)
class RunOptions:
    """horizon: frames forecast per step (1 = next frame only). max_frames: stop after N frames.
    video/metrics: output paths (None = not written). show: an OpenCV window. output_fps: frame
    rate of the written video."""

    horizon: int = 1
    max_frames: int | None = None
    video: Path | None = None
    metrics: Path | None = None
    show: bool = False
    output_fps: float = 25.0


@dataclass
class RunSummary:
    steps: int = 0
    dropped_frames: int = 0
    resets: int = 0
    nonfinite_resets: int = 0
    infer_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    psnr_db: list[float] = field(default_factory=list)
    copy_last_psnr_db: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        def median(values: list[float]) -> float | None:
            return round(statistics.median(values), 2) if values else None

        return {"steps": self.steps, "dropped_frames": self.dropped_frames,
                "resets": self.resets, "nonfinite_resets": self.nonfinite_resets,
                "infer_ms_median": median(self.infer_ms),
                "capture_to_prediction_ms_median": median(self.latency_ms),
                "capture_to_prediction_ms_max": round(max(self.latency_ms), 2)
                if self.latency_ms else None,
                "psnr_db_mean": round(float(np.mean(self.psnr_db)), 3) if self.psnr_db else None,
                "copy_last_psnr_db_mean": round(float(np.mean(self.copy_last_psnr_db)), 3)
                if self.copy_last_psnr_db else None,
                "fps": round(self.steps / self.wall_s, 2) if self.wall_s else None}


def error_heatmap(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """|predicted - actual| of two RGB (3, H, W) frames as a BGR uint8 heat-map (H, W, 3)."""
    error = np.abs(np.clip(predicted, 0, 1) - actual).mean(axis=0) * HEATMAP_GAIN
    return cv2.applyColorMap((np.clip(error, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)


def run_stream(predictor: Predictor, grabber: FrameGrabber, options: RunOptions,
               on_step: Callable[[RunSummary, dict[str, Any]], None] | None = None,
               log: Callable[[str], None] = print) -> RunSummary:
    """Drive ``predictor`` over ``grabber`` until the source ends or ``max_frames``."""
    summary, stream = RunSummary(), predictor.new_stream()
    previous_prediction: np.ndarray | None = None
    previous_frame: np.ndarray | None = None
    metrics_file: TextIO | None = open(options.metrics, "w") if options.metrics else None
    video = VideoFileWriter(options.video, options.output_fps) if options.video else None
    start = time.perf_counter()
    try:
        while options.max_frames is None or summary.steps < options.max_frames:
            event = grabber.read()
            if event is None:
                break
            if event.reset:
                stream.reset()
                summary.resets += 1
                previous_prediction = previous_frame = None
            t0 = time.perf_counter()
            frame = bgr_to_model_frame(event.frame, predictor.frame_hw)          # (3, H, W)
            t1 = time.perf_counter()
            nonfinite = False
            try:
                forecast = predictor.step(stream, frame, horizon=options.horizon)  # (K, 3, H, W)
            except NonFiniteStateError as err:
                log(f"warning: {err}")
                forecast, nonfinite = None, True
                summary.nonfinite_resets += 1
            t2 = time.perf_counter()
            record: dict[str, Any] = {"step": summary.steps + 1, "source_frame": event.index,
                                      "reset": event.reset, "nonfinite": nonfinite}
            if previous_prediction is not None and previous_frame is not None:
                summary.psnr_db.append(psnr_db(np.clip(previous_prediction, 0, 1), frame))
                summary.copy_last_psnr_db.append(psnr_db(previous_frame, frame))
                record.update(psnr_db=round(summary.psnr_db[-1], 3),
                              copy_last_psnr_db=round(summary.copy_last_psnr_db[-1], 3))
                if video is not None or options.show:      # compose only for a sink
                    panel = side_by_side([
                        ("actual", model_frame_to_bgr(frame)),
                        ("predicted", model_frame_to_bgr(previous_prediction)),
                        (f"|error| x{HEATMAP_GAIN:g}", error_heatmap(previous_prediction, frame))])
                    if video is not None:
                        video.write(panel)
                    if options.show:
                        cv2.imshow("stae run", panel)
                        cv2.waitKey(1)
            previous_prediction = None if forecast is None else forecast[0]
            previous_frame = frame
            t3 = time.perf_counter()
            summary.steps += 1
            summary.dropped_frames = grabber.dropped
            summary.infer_ms.append((t2 - t1) * 1e3)
            summary.latency_ms.append((t2 - event.captured_at) * 1e3)
            record.update(preprocess_ms=round((t1 - t0) * 1e3, 3),
                          infer_ms=round((t2 - t1) * 1e3, 3),
                          postprocess_ms=round((t3 - t2) * 1e3, 3),
                          capture_to_prediction_ms=round(summary.latency_ms[-1], 3),
                          dropped_frames=grabber.dropped)
            if metrics_file is not None:
                metrics_file.write(json.dumps(record) + "\n")
            if on_step is not None:
                on_step(summary, record)
    finally:
        summary.wall_s = time.perf_counter() - start
        if metrics_file is not None:
            metrics_file.close()
        if video is not None:
            video.close()
    return summary
