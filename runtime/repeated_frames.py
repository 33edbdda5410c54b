"""Repeated frames: a camera or stream that sends the same picture again costs no accuracy.

Sources repeat frames whenever their rate is below the capture rate (a 12.5 fps source captured
at 25 fps gives a a b b c c ...; RTSP streams repeat on stalls). Copy-last is exact on a repeat,
while a model that extrapolates motion is not, and a duplicate fed into the recurrent state tells
it that motion stopped.

:class:`FrameCadence` keeps, per stream, whether each frame repeats its predecessor and how long
the recent runs were (a run: a new frame and its repeats). In ``"hold"`` mode (the default):

* a repeated frame is not a model step: the state does not advance;
* the prediction emitted for the next frame is the current frame itself when the stream's cadence
  says the next frame will repeat too (position in the run < the median run length), else the
  model's pending prediction, made at the run's new frame, of the next *new* frame.

So with a steady 2x cadence repeated targets get an exact copy and new targets the model's
prediction; without repeats (median run length 1) every step is exactly as before. ``"step"``
mode feeds every frame to the model, as older versions did. Torch-free.
"""
from __future__ import annotations

import statistics
from collections import deque

import numpy as np

from stae_deploy.runtime.errors import ConfigError

# Mean absolute difference (frames in [0, 1]) below which a frame repeats its predecessor:
# half a grey level. Decoded duplicates of diver.mov (MJPEG) differ by 0 at 128x128; the slowest
# real motion in the project's clips (motion.mov's still opening) differs by > 1.5 levels.
REPEAT_MEAN_ABS_DIFF = 0.5 / 255.0
REPEAT_MODES = ("hold", "step")
CADENCE_RUNS = 8          # the run lengths the expected cadence is the median of


def is_repeated_frame(previous: np.ndarray, frame: np.ndarray,
                      threshold: float = REPEAT_MEAN_ABS_DIFF) -> bool:
    """Whether model frame ``frame`` (RGB float32 (3, H, W) in [0, 1]) repeats ``previous``:
    their mean absolute difference is at most ``threshold``."""
    return float(np.abs(frame - previous).mean()) <= threshold


class FrameCadence:
    """One stream's repeated-frame bookkeeping (see the module docstring).

    ``mode``: "hold" or "step"; ``threshold``: see :func:`is_repeated_frame`."""

    def __init__(self, mode: str = "hold", threshold: float = REPEAT_MEAN_ABS_DIFF):
        if mode not in REPEAT_MODES:
            raise ConfigError(f"repeated_frames: expected one of {REPEAT_MODES}, got {mode!r}")
        if not 0.0 <= threshold < 1.0:
            raise ConfigError(f"repeat_threshold: expected in [0, 1), got {threshold}")
        self.mode, self.threshold = mode, threshold
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new scene or a reconnect)."""
        self.previous: np.ndarray | None = None
        self.position = 0                                  # frames of the current run so far
        self.run_lengths: deque[int] = deque(maxlen=CADENCE_RUNS)

    def observe(self, frame: np.ndarray) -> bool:
        """Record ``frame`` (3, H, W); True if it repeats the previous frame."""
        repeated = self.previous is not None and is_repeated_frame(self.previous, frame,
                                                                   self.threshold)
        if repeated:
            self.position += 1
        else:
            if self.position:
                self.run_lengths.append(self.position)
            self.position = 1
        self.previous = frame
        return repeated

    def skips_step(self, repeated: bool) -> bool:
        """Whether a frame that ``repeated`` is left out of the model step (hold mode)."""
        return repeated and self.mode == "hold"

    def expects_repeat(self) -> bool:
        """Whether the next frame is expected to repeat the current one: the position in the
        current run is below the median of the last runs' lengths (hold mode only)."""
        if self.mode != "hold" or not self.run_lengths:
            return False
        return self.position < statistics.median(self.run_lengths)

    def emitted(self, frame: np.ndarray, pending: np.ndarray) -> np.ndarray:
        """The prediction to emit after ``frame``: (K, 3, H, W), ``frame`` repeated K times if a
        repeat is expected, else ``pending`` (the model's latest forecast, (K, 3, H, W))."""
        if self.expects_repeat():
            return np.broadcast_to(frame, pending.shape)
        return pending
