"""The state-range guard of ``stae run``: notices when a stream's recurrent state leaves the
range it was seen to take (calibration, or the export's rollout; ``ArtifactMetadata.state_ranges``).

An LSTM memory can grow for as long as a camera runs (PredRNN++'s reached 997 after 1000 steps,
over 4x what calibration saw). Past its range an INT8 engine clips it and FP16 resolves it
coarsely, and the model predicts from a state it never trained on, with no error anywhere. The
guard compares each step's state extremes with the recorded range widened by ``margin`` times
its width on both sides, and counts the steps where any tensor is outside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.state_ranges import StateRanges

GUARD_MODES = ("off", "warn", "reset")
MIN_WIDTH = 1e-6            # a tensor seen constant still gets a margin


@dataclass(frozen=True)
class RangeGuardSettings:
    """mode: "off"; "warn" (count, warn once per stream and tensor); "reset" (also restart the
    stream from the zero state). margin: how far past the recorded range, in range widths, a
    value may go before it counts (>= 0)."""

    mode: str = "warn"
    margin: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in GUARD_MODES:
            raise ConfigError(f"range guard mode: expected one of {GUARD_MODES}, got "
                              f"{self.mode!r}")
        if not self.margin >= 0:
            raise ConfigError(f"range guard margin: expected >= 0 (range widths), got "
                              f"{self.margin}")


@dataclass(frozen=True)
class Excursion:
    """A state tensor outside its allowed limits at one step."""

    tensor: str
    low: float                # the allowed limits (the range widened by the margin)
    high: float
    seen_min: float
    seen_max: float

    def describe(self, ranges: StateRanges) -> str:
        low, high = ranges.ranges[self.tensor]
        return (f"state '{self.tensor}' is at [{self.seen_min:.4g}, {self.seen_max:.4g}], "
                f"outside [{self.low:.4g}, {self.high:.4g}] (its range [{low:.4g}, {high:.4g}] "
                f"from {ranges.source}, widened by the margin)")


class RangeGuard:
    """Limits per state tensor from ``ranges`` and ``settings.margin``."""

    def __init__(self, ranges: StateRanges, settings: RangeGuardSettings):
        self.ranges, self.settings = ranges, settings
        self.limits: dict[str, tuple[float, float]] = {}
        for name, (low, high) in ranges.ranges.items():
            slack = settings.margin * max(high - low, MIN_WIDTH)
            self.limits[name] = (low - slack, high + slack)

    def excursions(self, extremes: Mapping[str, tuple[float, float]]) -> list[Excursion]:
        """The tensors of ``extremes`` (name -> (min, max) of one stream's state now) outside
        their limits; NaN counts as outside."""
        out = []
        for name, (seen_min, seen_max) in extremes.items():
            if name in self.limits:
                low, high = self.limits[name]
                if not (low <= seen_min and seen_max <= high):
                    out.append(Excursion(name, low, high, seen_min, seen_max))
        return out
