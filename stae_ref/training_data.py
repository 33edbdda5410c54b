"""Training and held-out data: registered clips and any video file, split in time.

Each video's usable frames are split in time: the first ``1 - holdout_fraction`` are training
frames, the rest are held out. Held-out frames are never a training input or target; evaluation
may use the training frames before them as context (the stream runs through them). Training
reads the uint8 frame cache (``stae_deploy.stae_ref.video_cache``) through memory maps, so long
footage trains in bounded RAM, and no training sequence straddles a scene cut.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.stae_ref.footage import clip_source, fetch, load_clip
from stae_deploy.stae_ref.video_cache import CachedVideo, cached_video

DEFAULT_HOLDOUT_FRACTION = 0.2   # the last fifth of every clip is held out
VALIDATION_CONTEXT = 24          # frames of a held-out tail's shot streamed before its targets
VALIDATION_MAX_TARGETS = 120


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


@dataclass(frozen=True)
class Shots:
    """Frames a sampler may draw sequences from: uint8 (N, H, W, 3) RGB frames (a memory map or
    an array) and the cut-free ranges ``[start, stop)`` of them that are training frames."""

    name: str
    frames: np.ndarray
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TrainingVideo:
    """One video of a training run: a registered clip or a user's file, decoded into the cache.

    ``usable``: its frames ``[start, stop)`` (a registered clip's usable range, else all);
    ``holdout_start``: the first held-out frame (absolute index). Frames from it on are never a
    training input or target; training sequences lie inside one shot (no cut inside)."""

    name: str
    video: CachedVideo
    usable: tuple[int, int]
    holdout_start: int

    def shots(self) -> Shots:
        """The training frames' cut-free ranges."""
        return Shots(self.name, self.video.frames(),
                     tuple(self.video.shots(self.usable[0], self.holdout_start)))

    def held_out_split(self, context: int = VALIDATION_CONTEXT,
                       max_targets: int = VALIDATION_MAX_TARGETS) -> ClipSplit:
        """The held-out frames of the shot the tail starts in, at most ``max_targets``, after
        up to ``context`` frames of that shot before it: float32 frames for validation."""
        shot_start, shot_stop = next((a, b) for a, b in self.video.shots(*self.usable)
                                     if a <= self.holdout_start < b)
        first = max(shot_start, self.holdout_start - context)
        stop = min(shot_stop, self.holdout_start + max_targets)
        frames = self.video.frames()[first:stop].transpose(0, 3, 1, 2).astype(np.float32) / 255
        return ClipSplit(self.name, frames, self.holdout_start - first)

    def provenance(self) -> dict[str, Any]:
        """What a checkpoint records of this video: file, sha256, frames, cuts, the training
        shots and the held-out range."""
        return {"name": self.name, "file": self.video.source, "sha256": self.video.sha256,
                "frames": self.video.frame_count, "usable": list(self.usable),
                "cuts": list(self.video.cuts),
                "train_ranges": [list(r) for r in self.shots().ranges],
                "held_out": [self.holdout_start, self.usable[1]]}


def training_videos(clips: Sequence[str], videos: Sequence[str], frame_size: tuple[int, int],
                    holdout_fraction: float, min_frames: int, cache: str | None = None,
                    log: Callable[[str], None] | None = None) -> list[TrainingVideo]:
    """Each registered clip and video file, decoded (or found) in the cache and split in time.

    Refuses, before any training, an evaluation-only clip, and a video that cannot be read,
    holds no frame, or has no cut-free run of ``min_frames`` training frames, naming it."""
    if not 0.0 < holdout_fraction < 1.0:
        raise ConfigError(f"holdout_fraction: expected in (0, 1), got {holdout_fraction}")
    named: list[tuple[str, Path, tuple[int, int] | None]] = []
    for name in clips:
        clip = clip_source(name)
        if clip.evaluation_only:
            raise ConfigError(f"clips: '{name}' is kept for evaluation only (footage no model "
                              f"here trains on); train on your own copy with --video")
        named.append((name, fetch(clip, cache), clip.usable_frames))
    named.extend((Path(path).stem, Path(path), None) for path in videos)
    result = []
    for name, path, usable in named:
        if log is not None:
            log(f"decoding {path} at {frame_size[0]}x{frame_size[1]} (cached after the first run)")
        video = cached_video(path, frame_size, cache)
        start, stop = usable or (0, video.frame_count)
        stop = min(stop, video.frame_count)
        holdout_start = start + int(round((stop - start) * (1 - holdout_fraction)))
        entry = TrainingVideo(name, video, (start, stop), holdout_start)
        longest = max((b - a for a, b in entry.shots().ranges), default=0)
        if longest < min_frames:
            raise FootageError(
                f"video {path}: its training part (frames {start}..{holdout_start - 1}, cuts at "
                f"{list(video.cuts) or 'none'}) has no cut-free run of {min_frames} frames, the "
                f"length of one training sequence ({video.frame_count} frames in all)")
        result.append(entry)
    return result


class SequenceSampler:
    """Random training sequences: (B, steps + 1, 3, crop, crop) float32 in [0, 1], each from one
    shot of the training frames (never across a cut, never a held-out frame).

    Sources are drawn with weight sqrt(number of sequence starts), so one long video does not
    crowd out short clips. With ``synthetic`` (a :class:`~stae_deploy.stae_ref.synthetic_motion.SyntheticMotion`),
    a share ``synthetic_fraction`` of the sequences is synthetic camera motion over a photo.
    Augmentation: random crop, horizontal flip and time reversal (a pan played backwards is a
    pan). With ``pause_probability`` a sequence's motion stops at a random frame k >= 2: frames
    k.. repeat frame k-1 (a talking head that pauses, a camera that stops), so the model also
    learns that motion may stop. Deterministic for a given ``numpy.random.Generator`` state.
    """

    def __init__(self, sources: Sequence[Shots], steps: int, crop: int,
                 pause_probability: float = 0.0, synthetic: Any = None,
                 synthetic_fraction: float = 0.0):
        if not 0.0 <= pause_probability <= 1.0:
            raise ConfigError(f"pause_probability: expected in [0, 1], got {pause_probability}")
        if not 0.0 <= synthetic_fraction <= 1.0 or (synthetic_fraction and synthetic is None):
            raise ConfigError(f"synthetic_fraction: expected in [0, 1] with a synthetic motion "
                              f"source, got {synthetic_fraction}")
        self.steps, self.crop = steps, crop
        self.pause_probability = pause_probability
        self.synthetic, self.synthetic_fraction = synthetic, synthetic_fraction
        self.starts: list[tuple[Shots, np.ndarray]] = []
        for source in sources:
            height, width = source.frames.shape[1:3]
            if crop > min(height, width):
                raise ConfigError(f"crop: {crop} is larger than the frames of '{source.name}' "
                                  f"({height}x{width})")
            starts = np.concatenate([np.arange(a, b - steps) for a, b in source.ranges
                                     if b - a > steps] or [np.zeros(0, np.int64)])
            if starts.size:
                self.starts.append((source, starts))
        if not self.starts and synthetic_fraction < 1.0:
            raise ConfigError(f"no source has a cut-free run of {steps + 1} training frames")
        weights = np.sqrt([starts.size for _, starts in self.starts])
        self.weights = weights / weights.sum() if weights.size else weights

    def sample(self, rng: np.random.Generator, batch: int) -> np.ndarray:
        """(B, steps + 1, 3, crop, crop) float32 in [0, 1]."""
        out = np.empty((batch, self.steps + 1, 3, self.crop, self.crop), np.float32)
        for b in range(batch):
            if self.synthetic_fraction and rng.random() < self.synthetic_fraction:
                out[b] = self.synthetic.sample(rng, self.steps + 1, self.crop)
            else:
                out[b] = self._real(rng)
            if self.pause_probability and rng.random() < self.pause_probability:
                pause_start = rng.integers(2, self.steps + 1)
                out[b, pause_start:] = out[b, pause_start - 1]
        return out

    def _real(self, rng: np.random.Generator) -> np.ndarray:
        source, starts = self.starts[rng.choice(len(self.starts), p=self.weights)]
        start = int(starts[rng.integers(0, starts.size)])
        height, width = source.frames.shape[1:3]
        top, left = rng.integers(0, height - self.crop + 1), rng.integers(0, width - self.crop + 1)
        clip = source.frames[start:start + self.steps + 1, top:top + self.crop,
                             left:left + self.crop]                            # (S+1, c, c, 3)
        clip = clip.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        if rng.random() < 0.5:
            clip = clip[..., ::-1]
        if rng.random() < 0.5:
            clip = clip[::-1]
        return clip
