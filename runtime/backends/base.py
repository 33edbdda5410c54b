"""The interface every backend implements; the Predictor does validation and bookkeeping.

A backend owns the engine/session and the device. It hands out *state sets*: one buffer per
state tensor of the protocol, living on the backend's device. The predictor never looks inside a
set; it only passes one set as inputs and another as outputs of a step (never the same set:
TensorRT gives wrong results when a state input and its output share memory, NVIDIA/TensorRT#4681).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from runtime.artifact import ArtifactMetadata

StateSet = Any   # a backend-specific handle to one buffer per state tensor, on the device


class Backend(ABC):
    """One loaded model on one device."""

    metadata: ArtifactMetadata

    @abstractmethod
    def new_state_set(self) -> StateSet:
        """Allocate one zero-filled buffer set for the protocol's state tensors (batch 1)."""

    @abstractmethod
    def zero(self, state: StateSet) -> None:
        """Fill every buffer of ``state`` with zeros (on the device)."""

    @abstractmethod
    def run(self, frame: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        """One step: ``frame`` (1, 3, H, W) in the graph's frame dtype, state read from
        ``inputs`` and written to ``outputs``. Returns the prediction (1, 3, H, W) on the host."""

    def close(self) -> None:
        """Release device resources (optional)."""
