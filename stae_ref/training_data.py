"""Training and held-out data from the real footage clips.

Each clip's usable frames are split in time: the first ``1 - holdout_fraction`` are training
frames, the rest are held out. Held-out frames are never a training input or target; evaluation
may use the training frames before them as context (the stream runs through them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.footage import load_clip

DEFAULT_HOLDOUT_FRACTION = 0.2   # the last fifth of every clip is held out


@dataclass(frozen=True)
class ClipSplit:
    """One clip at the model's frame size: frames (K, 3, H, W) and the first held-out index."""

    name: str
    frames: np.ndarray
    holdout_start: int

    @property
    def train_frames(self) -> np.ndarray:
        return self.frames[:self.holdout_start]


def split_clips(names: tuple[str, ...], frame_size: tuple[int, int], holdout_fraction: float,
                cache: str | None = None) -> list[ClipSplit]:
    """Load each clip and split it; the last ``holdout_fraction`` of its frames are held out."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigError(f"holdout_fraction: expected in (0, 1), got {holdout_fraction}")
    splits = []
    for name in names:
        frames = load_clip(name, frame_size, cache)
        splits.append(ClipSplit(name, frames, int(round(len(frames) * (1 - holdout_fraction)))))
    return splits


class SequenceSampler:
    """Random training sequences: (B, steps + 1, 3, crop, crop) float32 from training frames only.

    Augmentation: random crop, horizontal flip and time reversal (a pan played backwards is a
    pan). With ``pause_probability`` a sequence's motion stops at a random frame k >= 2: frames
    k.. repeat frame k-1 (a talking head that pauses, a camera that repeats frames), so the
    model also learns that motion may stop. Deterministic for a given ``numpy.random.Generator``
    state.
    """

    def __init__(self, splits: list[ClipSplit], steps: int, crop: int,
                 pause_probability: float = 0.0):
        if not 0.0 <= pause_probability <= 1.0:
            raise ConfigError(f"pause_probability: expected in [0, 1], got {pause_probability}")
        self.splits, self.steps, self.crop = splits, steps, crop
        self.pause_probability = pause_probability
        for split in splits:
            height, width = split.frames.shape[-2:]
            if len(split.train_frames) < steps + 1 or crop > min(height, width):
                raise ConfigError(f"clip '{split.name}': {len(split.train_frames)} training frames "
                                  f"of {height}x{width} cannot give {steps + 1}-frame sequences "
                                  f"of {crop}x{crop} crops")
        weights = np.array([len(s.train_frames) - steps for s in splits], dtype=np.float64)
        self.weights = weights / weights.sum()

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        out = np.empty((batch, self.steps + 1, 3, self.crop, self.crop), np.float32)
        for b in range(batch):
            split = self.splits[rng.choice(len(self.splits), p=self.weights)]
            start = rng.integers(0, len(split.train_frames) - self.steps)
            height, width = split.frames.shape[-2:]
            top, left = rng.integers(0, height - self.crop + 1), rng.integers(0, width - self.crop + 1)
            clip = split.train_frames[start:start + self.steps + 1, :, top:top + self.crop,
                                      left:left + self.crop]
            if rng.random() < 0.5:
                clip = clip[..., ::-1]
            if rng.random() < 0.5:
                clip = clip[::-1]
            out[b] = clip
            if self.pause_probability and rng.random() < self.pause_probability:
                pause_start = rng.integers(2, self.steps + 1)
                out[b, pause_start:] = out[b, pause_start - 1]
        return out
