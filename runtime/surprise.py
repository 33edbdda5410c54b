"""Surprise: how much worse than usual the model predicted a frame, and events when it is
much worse for a while.

A next-frame predictor is surprised by what it could not foresee: a cut, an intrusion, a fall,
a camera knocked out of place. Per stream, the prediction error of each frame is measured in dB
(:func:`error_db`: ``-PSNR`` of the prediction made one step earlier against the frame that
came) and compared
with the stream's own recent history, so one threshold serves a busy street and a still room:

    score = (error_db - median(history)) / max(1.4826 * MAD(history), floor_db)

``history`` holds the last ``window`` scored frames (MAD: the median absolute deviation, scaled
to a standard deviation for normal noise; ``floor_db`` keeps a near-constant history from turning
compression noise into surprise). A score of 6 is an error six "standard deviations" worse than
this stream's usual. Repeated frames are not scored (nothing new came), and a stream scores
nothing until ``min_history`` frames after its start or a reset.

An event starts when the score reaches ``threshold`` at least ``min_gap_frames`` after the last
event started, and lasts until the score falls below ``release`` (hysteresis: one event per
surprise, not one per frame). Choosing the threshold: the score is in robust standard deviations
of the stream's own error, so 6 (the default) fires on a change far outside what the stream did
in the last ``window`` frames; lower it to catch subtler changes at the cost of more false
events (``python -m stae_deploy.benchmarks.surprise_events`` measures both on footage with known
events).
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

import numpy as np

from stae_deploy.runtime.errors import ConfigError


@dataclass(frozen=True)
class SurpriseSettings:
    """threshold / release: the score at which an event starts / below which it ends (release
    < threshold). window: frames of history (>= min_history). min_history: frames scored before
    the first score (>= 3). floor_db: the smallest spread of the history, dB (> 0).
    min_gap_frames: frames between the starts of two events (>= 0)."""

    threshold: float = 6.0
    release: float = 2.0
    window: int = 50
    min_history: int = 10
    floor_db: float = 0.5
    min_gap_frames: int = 10

    def __post_init__(self) -> None:
        if not self.release < self.threshold:
            raise ConfigError(f"release: expected below threshold ({self.threshold}), got "
                              f"{self.release}")
        if self.min_history < 3 or self.window < self.min_history:
            raise ConfigError(f"min_history/window: expected 3 <= min_history <= window, got "
                              f"{self.min_history} and {self.window}")
        if not self.floor_db > 0:
            raise ConfigError(f"floor_db: expected > 0, got {self.floor_db}")
        if self.min_gap_frames < 0:
            raise ConfigError(f"min_gap_frames: expected >= 0, got {self.min_gap_frames}")

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


MAX_PSNR_DB = 100.0           # a perfect prediction counts as this good


def error_db(psnr_db: float) -> float:
    """The prediction error in dB of a prediction with this PSNR (dB): ``-PSNR``, a perfect
    (infinite-PSNR) prediction capped at ``-MAX_PSNR_DB``."""
    return -min(psnr_db, MAX_PSNR_DB)


@dataclass(frozen=True)
class SurpriseEvent:
    """An event: the stream's frame (index in its source) where it started, and its score."""

    frame: int
    score: float


class SurpriseTracker:
    """One stream's history, score and event state (see the module doc)."""

    def __init__(self, settings: SurpriseSettings = SurpriseSettings()):
        self.settings = settings
        self.history: deque[float] = deque(maxlen=settings.window)
        self.active = False
        self.last_event_frame: int | None = None
        self.events = 0

    def reset(self) -> None:
        """Forget the history (a reset stream starts a new scene); events stay counted."""
        self.history.clear()
        self.active = False

    def observe(self, frame: int, error: float) -> tuple[float | None, SurpriseEvent | None]:
        """Score the error (dB) of the prediction of source frame ``frame``; (score or None
        while the history is short, the event that starts here or None)."""
        settings = self.settings
        score = None
        if len(self.history) >= settings.min_history:
            values = np.asarray(self.history)
            median = float(np.median(values))
            spread = 1.4826 * float(np.median(np.abs(values - median)))
            score = (error - median) / max(spread, settings.floor_db)
        self.history.append(error)
        event = None
        if score is not None:
            if self.active and score < settings.release:
                self.active = False
            elif not self.active and score >= settings.threshold and (
                    self.last_event_frame is None
                    or frame - self.last_event_frame >= settings.min_gap_frames):
                self.active, self.last_event_frame = True, frame
                self.events += 1
                event = SurpriseEvent(frame, score)
        return score, event
