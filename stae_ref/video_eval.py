"""A model's next-frame quality on any video: what ``stae eval CKPT --video`` reports.

One teacher-forced stream over every frame, as the runtime deploys it: a frame that repeats its
predecessor is handled by the runtime's repeated-frame policy
(``stae_deploy.runtime.repeated_frames``, "hold" by default: no model step, the frame or the
pending prediction is emitted by the stream's cadence; "step": every frame is a step). Targets
from ``start_fraction`` of the video on are scored (the frames before are context only: fine-tune
on the first 80 %, score the last 20 %). Per target: model and copy-last PSNR (dB) and SSIM.

Reported: the gain over copy-last on all targets and on *changing* targets only (a target that
repeats its predecessor is counted and excluded: copy-last is exact there), each with a seeded
95 % bootstrap interval over frames; closed-loop PSNR at horizons 1..N (over at most
``CLOSED_LOOP_WINDOWS`` evenly spaced windows per video); a per-frame PSNR plot.
An exact prediction has infinite PSNR: every PSNR is capped at ``PSNR_CAP_DB`` so that means
over all frames stay finite.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.runtime.metrics import PSNR_CAP_DB, bootstrap_mean_interval, psnr_db, ssim
from stae_deploy.runtime.plots import save_line_plot
from stae_deploy.runtime.repeated_frames import REPEAT_MODES, FrameCadence, is_repeated_frame
from stae_deploy.stae_ref.evaluation import ClipScores, closed_loop_scores
from stae_deploy.stae_ref.footage import CLIPS, fetch, read_frames
from stae_deploy.stae_ref.model_source import ModelSource, load_model
from stae_deploy.stae_ref.training_data import ClipSplit
from stae_deploy.stae_ref.video_cache import expand_video_paths

CLOSED_LOOP_WINDOWS = 40  # closed-loop windows per video at most (evenly spaced)


@dataclass(frozen=True)
class VideoEvalConfig:
    """checkpoint: a stae checkpoint. videos: video files, folders, globs or registered clip
    names. frame_size: (H, W) to evaluate at (None: the model's; the network is fully
    convolutional). start_fraction: score targets from this fraction of each video on.
    horizons: closed-loop horizons 1..N (0: none). repeated_frames: the runtime's policy, "hold"
    or "step". plot: per-frame PSNR PNG (None: none). resamples/seed: the bootstrap's."""

    checkpoint: str
    videos: tuple[str, ...]
    frame_size: tuple[int, int] | None = None
    start_fraction: float = 0.0
    horizons: int = 4
    repeated_frames: str = "hold"
    plot: str | None = None
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "videos", tuple(self.videos))
        if not self.videos:
            raise ConfigError("videos: expected at least one video file, folder, glob or clip")
        if not 0.0 <= self.start_fraction < 1.0:
            raise ConfigError(f"start_fraction: expected in [0, 1), got {self.start_fraction}")
        if self.horizons < 0:
            raise ConfigError(f"horizons: expected >= 0, got {self.horizons}")
        if self.repeated_frames not in REPEAT_MODES:
            raise ConfigError(f"repeated_frames: expected one of {REPEAT_MODES}, got "
                              f"{self.repeated_frames!r}")


def video_paths(videos: tuple[str, ...]) -> dict[str, Path]:
    """Name -> file: registered clips by name (fetched), everything else expanded as paths."""
    paths: dict[str, Path] = {}
    for entry in videos:
        if entry in CLIPS:
            paths[entry] = fetch(entry)
        else:
            paths.update({path.stem: path for path in expand_video_paths([entry])})
    return paths


def evaluate_videos(config: VideoEvalConfig) -> dict[str, Any]:
    """The report: per video the figures of :func:`score_stream` (and closed loop), plus the
    checkpoint, frame size and policy; writes ``config.plot`` if set."""
    model, _ = load_model(ModelSource(checkpoint=config.checkpoint,
                                      frame_size=config.frame_size))
    frame_size = tuple(model.config.frame_size)
    report: dict[str, Any] = {"checkpoint": config.checkpoint, "frame_size": list(frame_size),
                              "repeated_frames": config.repeated_frames,
                              "start_fraction": config.start_fraction, "per_video": {}}
    series: dict[str, list[float]] = {}
    for name, path in video_paths(config.videos).items():
        decoded = list(read_frames(path, frame_size))
        if len(decoded) < 3:
            raise FootageError(f"video {path}: needs at least 3 frames to score a prediction, "
                               f"got {len(decoded)}")
        frames = np.stack(decoded)
        first_target = max(1, int(len(frames) * config.start_fraction))
        result = score_stream(model, frames, first_target, config.repeated_frames,
                              config.resamples, config.seed)
        if config.horizons:
            scores = ClipScores()
            stride = max(2, (len(frames) - first_target) // CLOSED_LOOP_WINDOWS)
            closed_loop_scores(model, ClipSplit(name, frames, first_target), scores,
                               config.horizons, stride=stride)
            result["horizon_psnr_db"] = [
                {"horizon": h + 1,
                 "model": _mean(np.minimum(scores.horizon_model_psnr_db[h], PSNR_CAP_DB)),
                 "copy_last": _mean(np.minimum(scores.horizon_copy_last_psnr_db[h], PSNR_CAP_DB))}
                for h in range(config.horizons)]
        result["file"] = str(path)
        report["per_video"][name] = result
        series[f"{name}: STAE"] = result.pop("model_psnr_db_per_frame")
        series[f"{name}: copy last frame"] = result.pop("copy_last_psnr_db_per_frame")
    if config.plot:
        save_line_plot(config.plot, series, "scored target frame",
                       f"PSNR vs the frame (dB, capped at {PSNR_CAP_DB:g})",
                       f"{Path(config.checkpoint).name} at {frame_size[0]}x{frame_size[1]}, "
                       f"repeated frames: {config.repeated_frames}")
    return report


@torch.no_grad()
def score_stream(model: Any, frames: np.ndarray, first_target: int, repeated_frames: str = "hold",
                 resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Stream ``frames`` (N, 3, H, W) in [0, 1] through ``model`` from a zero state and score
    every target from index ``first_target`` on (see the module docstring). PSNR in dB."""
    cadence = FrameCadence(repeated_frames)
    state = model.zero_state(1, tuple(frames.shape[-2:]))
    pending: np.ndarray | None = None
    model_db, copy_db, model_ssim, copy_ssim, repeated = [], [], [], [], []
    for t in range(len(frames) - 1):
        again = cadence.observe(frames[t])
        if not cadence.skips_step(again):
            prediction, state = model.step(torch.from_numpy(frames[t][None]), state)
            pending = prediction.numpy()                            # (1, 3, H, W)
        emitted = frames[t][None] if pending is None else cadence.emitted(frames[t], pending)
        target = frames[t + 1]
        if t + 1 < first_target:
            continue
        predicted = np.clip(emitted[0], 0, 1)
        model_db.append(min(PSNR_CAP_DB, psnr_db(predicted, target)))
        copy_db.append(min(PSNR_CAP_DB, psnr_db(frames[t], target)))
        model_ssim.append(ssim(predicted, target))
        copy_ssim.append(ssim(frames[t], target))
        repeated.append(is_repeated_frame(frames[t], target, cadence.threshold))
    gain = np.subtract(model_db, copy_db)
    changing = gain[~np.asarray(repeated, bool)]
    all_low, all_high = bootstrap_mean_interval(gain, resamples, seed)
    low, high = bootstrap_mean_interval(changing, resamples, seed)
    return {"frames": len(frames), "targets": len(gain), "first_target": first_target,
            "repeated_targets": int(np.sum(repeated)),
            "model_psnr_db": _mean(model_db), "copy_last_psnr_db": _mean(copy_db),
            "gain_db": _mean(gain), "gain_db_ci95": [round(all_low, 3), round(all_high, 3)],
            "changing_gain_db": _mean(changing),
            "changing_gain_db_ci95": [round(low, 3), round(high, 3)],
            "changing_model_psnr_db": _mean(np.asarray(model_db)[~np.asarray(repeated, bool)]),
            "changing_copy_last_psnr_db": _mean(np.asarray(copy_db)[~np.asarray(repeated, bool)]),
            "repeated_model_psnr_db": _mean(np.asarray(model_db)[np.asarray(repeated, bool)]),
            "repeated_copy_last_psnr_db": _mean(np.asarray(copy_db)[np.asarray(repeated, bool)]),
            "model_ssim": _mean(model_ssim, 4), "copy_last_ssim": _mean(copy_ssim, 4),
            "model_psnr_db_per_frame": [round(v, 3) for v in model_db],
            "copy_last_psnr_db_per_frame": [round(v, 3) for v in copy_db]}


def _mean(values: Any, digits: int = 3) -> float:
    values = np.asarray(values, dtype=np.float64)
    return round(float(values.mean()), digits) if values.size else float("nan")
