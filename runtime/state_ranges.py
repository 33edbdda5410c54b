"""The value ranges a model's recurrent state was seen to take, carried in the artifact so the
runtime can tell when a stream's state leaves them (:mod:`stae_deploy.runtime.range_guard`).

They come from calibration (``stae quantize`` copies ``calib.npz.json``'s ranges into the INT8
artifact) or, for an FP32 export, from the rollout ``stae export`` records. Torch-free.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

from stae_deploy.runtime.errors import ProtocolError
from stae_deploy.runtime.protocol import IOSpec


@dataclass(frozen=True)
class StateRanges:
    """``ranges``: state input name -> (min, max) seen; ``source``: where they were seen (e.g.
    "calibration: 120 samples of city, carphone, motion")."""

    source: str
    ranges: Mapping[str, tuple[float, float]]

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ProtocolError(f"state ranges: 'source' must be a non-empty string, got "
                                f"{self.source!r}")
        checked = {}
        for name, bounds in self.ranges.items():
            if (len(bounds) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                            for v in bounds) or bounds[0] > bounds[1]):
                raise ProtocolError(f"state ranges: '{name}' must be [min, max] with finite "
                                    f"min <= max, got {list(bounds)}")
            checked[name] = (float(bounds[0]), float(bounds[1]))
        object.__setattr__(self, "ranges", checked)

    def check_names(self, spec: IOSpec) -> None:
        """Raise :class:`ProtocolError` if a range is of no state input of ``spec``."""
        names = {pair.input.name for pair in spec.state}
        unknown = sorted(set(self.ranges) - names)
        if unknown:
            raise ProtocolError(f"ranges for {unknown}, which are not state inputs of the "
                                f"protocol ({sorted(names)})")

    def to_json(self) -> str:
        return json.dumps({"source": self.source,
                           "ranges": {k: list(v) for k, v in self.ranges.items()}},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StateRanges":
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as err:
            raise ProtocolError(f"state ranges: not JSON ({err})") from None
        if not isinstance(data, Mapping) or set(data) != {"source", "ranges"} or not isinstance(
                data["ranges"], Mapping):
            raise ProtocolError(f"state ranges: expected {{'source': ..., 'ranges': {{name: "
                                f"[min, max]}}}}, got {text[:80]!r}")
        if not all(isinstance(v, list) for v in data["ranges"].values()):
            raise ProtocolError(f"state ranges: each range must be [min, max], got "
                                f"{text[:80]!r}")
        return cls(data["source"], {k: tuple(v) for k, v in data["ranges"].items()})
