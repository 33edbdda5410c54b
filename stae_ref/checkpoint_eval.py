"""A checkpoint's next-frame quality on the held-out frames it was trained beside: what
``stae eval`` reports.

The held-out split is the one recorded in the checkpoint's training config (default: the last
20 % of each clip); the figures are those of :func:`stae_deploy.stae_ref.evaluation.evaluate`,
optionally with :func:`~stae_deploy.stae_ref.evaluation.long_stream_stability` per clip and a
per-step PSNR plot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.plots import save_line_plot
from stae_deploy.stae_ref.checkpoint import load_checkpoint
from stae_deploy.stae_ref.evaluation import evaluate, long_stream_stability
from stae_deploy.stae_ref.footage import clip_names, forward_backward
from stae_deploy.stae_ref.train import TrainConfig
from stae_deploy.stae_ref.training_data import DEFAULT_HOLDOUT_FRACTION, split_clips


@dataclass(frozen=True)
class CheckpointEvalConfig:
    """checkpoint: a stae checkpoint. clips: footage names to score (None: those it was trained
    on, or a default training run's for an untrained checkpoint). horizons: closed-loop horizons
    1..N (0: none). long_stream_steps: also run each clip forward and backward for this many
    steps (0: not). plot: write the per-step PSNR plot (PNG) here (None: no plot)."""

    checkpoint: str
    clips: tuple[str, ...] | None = None
    horizons: int = 4
    long_stream_steps: int = 0
    plot: str | None = None

    def __post_init__(self) -> None:
        if self.clips is not None:
            object.__setattr__(self, "clips", clip_names(self.clips))
        for name in ("horizons", "long_stream_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0, got {getattr(self, name)}")


def evaluate_checkpoint(config: CheckpointEvalConfig) -> dict[str, Any]:
    """The evaluation report (PSNR in dB, SSIM in [0, 1], per clip and overall, model vs
    copy-last-frame) plus ``checkpoint`` and, with ``long_stream_steps``, ``long_stream`` per
    clip; writes ``config.plot`` if set."""
    model, metadata = load_checkpoint(config.checkpoint)
    trained = metadata.get("train_config", {})
    clips = config.clips or tuple(trained.get("clips", TrainConfig.clips))
    splits = split_clips(clips, model.config.frame_size,
                         trained.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION))
    report = evaluate(model, splits, horizons=config.horizons)
    report["checkpoint"] = config.checkpoint
    if config.long_stream_steps:
        report["long_stream"] = {split.name: long_stream_stability(
            model, forward_backward(split.frames, config.long_stream_steps + 1))
            for split in splits}
    if config.plot:
        series = {}
        for name, clip in report["per_clip"].items():
            series[f"{name}: STAE"] = clip["model_psnr_db_per_step"]
            series[f"{name}: copy last frame"] = clip["copy_last_psnr_db_per_step"]
        save_line_plot(config.plot, series, "held-out step", "PSNR vs next frame (dB)",
                       f"{config.checkpoint}: held-out frames, teacher-forced")
    return report
