"""The interface every INT8 target implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np


class QuantTarget(ABC):
    """Writes a Q/DQ ONNX graph (symmetric INT8, per-channel weights) from an FP32 one."""

    name: str

    @abstractmethod
    def quantize(self, source: Path, output: Path, calibration: Iterable[Mapping[str, np.ndarray]],
                 op_types: list[str] | None, exclude_nodes: list[str]) -> dict[str, Any]:
        """Quantise ``source`` into ``output``.

        calibration: feeds of the model's batch size (graph input name -> array).
        op_types: op types to quantise (None: every op the tool supports).
        exclude_nodes: exact node names kept in FP32.
        Returns what to record about the tool (name, version, options).
        """
