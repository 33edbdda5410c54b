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

from runtime.metrics import psnr_db, ssim
from stae_ref.model import STAE
from stae_ref.training_data import ClipSplit


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
    """Score every held-out next-frame prediction of one stream through the whole clip."""
    state = model.zero_state(1, tuple(split.frames.shape[-2:]))
    for t in range(len(split.frames) - 1):
        prediction, state = model.step(torch.from_numpy(split.frames[t][None]), state)
        if t + 1 < split.holdout_start:
            continue
        predicted, target, last = prediction[0].numpy(), split.frames[t + 1], split.frames[t]
        scores.model_psnr_db.append(psnr_db(np.clip(predicted, 0, 1), target))
        scores.copy_last_psnr_db.append(psnr_db(last, target))
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
    every = [s for s in per_clip.values()]

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
