"""The PyTorch reference over a real clip, teacher-forced, next frame: what ``stae predict`` writes.

Into ``output_dir``: ``reference_side_by_side.mp4`` (actual next frame | prediction | |error| x4),
``reference_psnr.png`` (per-step PSNR of the model and of copy-last-frame) and
``reference_psnr.json`` (the same numbers).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.runtime.media import VideoFileWriter, side_by_side
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.runtime.plots import save_line_plot
from stae_deploy.stae_ref.footage import DEFAULT_CLIP, clip_names, load_clip
from stae_deploy.stae_ref.model_source import ModelSource, load_model

OUTPUT_NAMES = ("reference_side_by_side.mp4", "reference_psnr.png", "reference_psnr.json")
ERROR_GAIN = 4.0        # |error| in [0, 1] x gain in the video's third panel


@dataclass(frozen=True)
class ReferencePredictionConfig:
    """source: the model's weights. clip: a footage name. max_frames: use at most this many
    frames (None: all; at least 2, one step). cache_dir: footage cache (None: the default).
    output_dir: where the three files go. fps: frame rate of the video. force: overwrite them."""

    source: ModelSource = field(default_factory=ModelSource)
    clip: str = DEFAULT_CLIP
    max_frames: int | None = None
    cache_dir: str | None = None
    output_dir: str = "out"
    fps: float = 10.0
    force: bool = False

    def __post_init__(self) -> None:
        clip_names([self.clip], field="clip")
        if self.max_frames is not None and self.max_frames < 2:
            raise ConfigError(f"max_frames: expected >= 2 (one step needs two frames), got "
                              f"{self.max_frames}")
        if not self.fps > 0:
            raise ConfigError(f"fps: expected > 0 frames per second, got {self.fps}")

    def output_paths(self) -> tuple[Path, Path, Path]:
        """(video, plot, json) paths in ``output_dir``."""
        video, plot, summary = (Path(self.output_dir) / name for name in OUTPUT_NAMES)
        return video, plot, summary


@torch.no_grad()
def predict_clip(config: ReferencePredictionConfig, progress: bool = True) -> dict[str, Any]:
    """Step the reference over ``config.clip`` (each real frame in, the next one predicted),
    write the three files and return the JSON summary: per-step PSNR in dB of the model and of
    copy-last-frame against the actual next frame, and their means. Existing files are refused
    before anything runs unless ``config.force``."""
    video_path, plot_path, json_path = (refuse_overwrite(path, config.force)
                                        for path in config.output_paths())
    model, _ = load_model(config.source)
    frame_size = model.config.frame_size
    frames = load_clip(config.clip, frame_size, config.cache_dir, config.max_frames)  # (K, 3, H, W)
    state = model.zero_state(1, frame_size)
    model_psnr, copy_last_psnr = [], []
    with VideoFileWriter(video_path, config.fps) as video:
        for t in tqdm(range(len(frames) - 1), desc=f"reference on {config.clip}", unit="step",
                      disable=not progress):
            prediction, state = model.step(torch.from_numpy(frames[t])[None], state)
            predicted, actual = np.clip(prediction[0].numpy(), 0, 1), frames[t + 1]
            model_psnr.append(psnr_db(predicted, actual))
            copy_last_psnr.append(psnr_db(frames[t], actual))
            error = np.abs(predicted - actual).mean(axis=0, keepdims=True) * ERROR_GAIN
            video.write(side_by_side([
                ("actual t+1", model_frame_to_bgr(actual)),
                (f"predicted  {model_psnr[-1]:.1f} dB", model_frame_to_bgr(predicted)),
                (f"|error| x{ERROR_GAIN:g}", model_frame_to_bgr(np.repeat(error, 3, axis=0))),
            ]))
    save_line_plot(plot_path, {"STAE reference": model_psnr, "copy last frame": copy_last_psnr},
                   "step", "PSNR vs next frame (dB)",
                   f"{config.clip}, {frame_size[0]}x{frame_size[1]}, teacher-forced")
    summary = {"clip": config.clip, "frame_size": list(frame_size),
               "checkpoint": config.source.checkpoint, "model_psnr_db": model_psnr,
               "copy_last_psnr_db": copy_last_psnr,
               "model_psnr_db_mean": float(np.mean(model_psnr)),
               "copy_last_psnr_db_mean": float(np.mean(copy_last_psnr))}
    json_path.write_text(json.dumps(summary, indent=2))
    return summary
