"""Next-frame quality on held-out real frames: the model against copy-last-frame.

Teacher-forced: one stream per clip from frame 0 (training frames are context only); every
prediction whose target is a held-out frame is scored. Closed loop: from windows in the held-out
range, warm up on real frames, then predict ``horizons`` frames feeding predictions back; the
baseline repeats the last real frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from stae_deploy.runtime.metrics import PSNR_CAP_DB, linear_slope, psnr_db, ssim
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.training_data import ClipSplit


@dataclass
class ClipScores:
    model_psnr_db: list[float] = field(default_factory=list)
    copy_last_psnr_db: list[float] = field(default_factory=list)
    model_ssim: list[float] = field(default_factory=list)
    copy_last_ssim: list[float] = field(default_factory=list)
    horizon_model_psnr_db: list[list[float]] = field(default_factory=list)     # [h][window]
    horizon_copy_last_psnr_db: list[list[float]] = field(default_factory=list)


@torch.no_grad()
def teacher_forced_scores(model: STAE, split: ClipSplit, scores: ClipScores,
                          with_ssim: bool = True) -> None:
    """Score every held-out next-frame prediction of one stream through the whole clip (PSNR
    capped at ``PSNR_CAP_DB``: a repeated frame's copy is exact)."""
    state = model.zero_state(1, tuple(split.frames.shape[-2:]))
    for t in range(len(split.frames) - 1):
        prediction, state = model.step(torch.from_numpy(split.frames[t][None]), state)
        if t + 1 < split.holdout_start:
            continue
        predicted, target, last = prediction[0].numpy(), split.frames[t + 1], split.frames[t]
        scores.model_psnr_db.append(min(PSNR_CAP_DB, psnr_db(np.clip(predicted, 0, 1), target)))
        scores.copy_last_psnr_db.append(min(PSNR_CAP_DB, psnr_db(last, target)))
        if with_ssim:
            scores.model_ssim.append(ssim(predicted, target))
            scores.copy_last_ssim.append(ssim(last, target))


@torch.no_grad()
def closed_loop_scores(model: STAE, split: ClipSplit, scores: ClipScores, horizons: int = 4,
                       warmup: int = 8, stride: int = 2) -> None:
    """PSNR at horizons 1..``horizons`` over windows whose targets are all held out."""
    scores.horizon_model_psnr_db = [[] for _ in range(horizons)]
    scores.horizon_copy_last_psnr_db = [[] for _ in range(horizons)]
    first = max(split.holdout_start - 1, warmup - 1)
    for last_real in range(first, len(split.frames) - horizons, stride):
        context = torch.from_numpy(split.frames[last_real - warmup + 1:last_real + 1][None])
        forecast = model.rollout(context, horizon=horizons).forecast[0].numpy()
        for h in range(horizons):
            target = split.frames[last_real + 1 + h]
            scores.horizon_model_psnr_db[h].append(psnr_db(np.clip(forecast[h], 0, 1), target))
            scores.horizon_copy_last_psnr_db[h].append(psnr_db(split.frames[last_real], target))


def evaluate(model: STAE, splits: list[ClipSplit], horizons: int = 4,
             with_ssim: bool = True) -> dict[str, Any]:
    """The report of ``stae eval`` (means in dB; see the module docstring)."""
    model = model.eval()
    per_clip: dict[str, ClipScores] = {}
    for split in splits:
        scores = per_clip[split.name] = ClipScores()
        teacher_forced_scores(model, split, scores, with_ssim)
        if horizons:
            closed_loop_scores(model, split, scores, horizons)
    every = list(per_clip.values())

    def mean(values: list[float]) -> float:
        return round(float(np.mean(values)), 3) if values else float("nan")

    report: dict[str, Any] = {
        "model_psnr_db": mean([p for s in every for p in s.model_psnr_db]),
        "copy_last_psnr_db": mean([p for s in every for p in s.copy_last_psnr_db]),
        "per_clip": {name: {"model_psnr_db": mean(s.model_psnr_db),
                            "copy_last_psnr_db": mean(s.copy_last_psnr_db),
                            "gain_db": round(mean(s.model_psnr_db) - mean(s.copy_last_psnr_db), 3),
                            "model_ssim": mean(s.model_ssim), "copy_last_ssim": mean(s.copy_last_ssim),
                            "held_out_targets": len(s.model_psnr_db),
                            "model_psnr_db_per_step": [round(p, 3) for p in s.model_psnr_db],
                            "copy_last_psnr_db_per_step": [round(p, 3) for p in s.copy_last_psnr_db]}
                     for name, s in per_clip.items()},
    }
    if horizons:
        report["horizon_psnr_db"] = [
            {"horizon": h + 1,
             "model": mean([p for s in every for p in s.horizon_model_psnr_db[h]]),
             "copy_last": mean([p for s in every for p in s.horizon_copy_last_psnr_db[h]])}
            for h in range(horizons)]
    return report


@torch.no_grad()
def long_stream_stability(model: STAE, frames: np.ndarray, window: int = 100) -> dict[str, Any]:
    """A camera running for hours: one teacher-forced stream over ``frames`` (N, 3, H, W).

    Per ``window`` steps: the largest |state| value (every state tensor but the clip window) and
    the mean next-frame PSNR gain over copy-last (dB). Bounded means no later window grows.
    """
    state = model.zero_state(1, tuple(frames.shape[-2:]))
    state_max, gain = [], []
    window_state, window_gain = 0.0, []
    for t in range(len(frames) - 1):
        prediction, state = model.step(torch.from_numpy(frames[t][None]), state)
        window_state = max(window_state, max(float(v.abs().max()) for k, v in state.items()
                                             if k != "clip_window"))
        target = frames[t + 1]
        window_gain.append(psnr_db(np.clip(prediction[0].numpy(), 0, 1), target)
                           - psnr_db(frames[t], target))
        if (t + 1) % window == 0:
            state_max.append(round(window_state, 4))
            gain.append(round(float(np.mean(window_gain)), 4))
            window_state, window_gain = 0.0, []
    steady = state_max[2] if len(state_max) > 2 else float("nan")
    return {"steps": len(frames) - 1, "window": window, "state_max_abs_per_window": state_max,
            "gain_db_per_window": gain,
            # The bound: after 200 steps no window above 1.1x the 200-300 window
            "state_max_later_over_200_300": round(max(state_max[2:], default=steady) / steady, 4),
            "gain_slope_db_per_100_steps": round(linear_slope(gain), 4)}
