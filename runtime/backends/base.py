"""The interface every backend implements; the Predictor does validation and bookkeeping.

A backend owns the engine/session and the device. It hands out *state sets*: one buffer per
state tensor of the protocol, with a batch axis of ``batch`` rows (one row per stream), living on
the backend's device. The predictor never looks inside a set; it passes one set as inputs and
another as outputs of a step (never the same set: TensorRT gives wrong results when a state input
and its output share memory, NVIDIA/TensorRT#4681), and moves single rows between sets on the
device to gather several streams into one batched step and scatter the results back.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import numpy as np

from stae_deploy.runtime.artifact import ArtifactMetadata

StateSet = Any   # a backend-specific handle to one buffer per state tensor, on the device


class Backend(ABC):
    """One loaded model on one device."""

    metadata: ArtifactMetadata

    @property
    def max_batch(self) -> int | None:
        """The largest batch one :meth:`run` takes (None: no limit). A static-batch artifact
        takes exactly its batch; an engine takes up to its optimisation profile's maximum."""
        batch = self.metadata.spec.batch
        return None if isinstance(batch, str) else int(batch)

    @abstractmethod
    def new_state_set(self, batch: int = 1) -> StateSet:
        """Allocate one zero-filled buffer per protocol state tensor, ``batch`` rows each."""

    @abstractmethod
    def zero(self, state: StateSet, row: int | None = None) -> None:
        """Fill row ``row`` (every row when None) of every buffer of ``state`` with zeros."""

    @abstractmethod
    def copy_row(self, source: StateSet, source_row: int, target: StateSet,
                 target_row: int) -> None:
        """Copy one stream's state, row ``source_row`` of ``source``, into row ``target_row``
        of ``target``, on the device."""

    @abstractmethod
    def run(self, frames: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        """One step of B streams: ``frames`` (B, 3, H, W) in the graph's frame dtype, state read
        from ``inputs`` and written to ``outputs`` (both B rows). Returns the predictions
        (B, 3, H, W) in a new host array (the next run does not overwrite it)."""

    @abstractmethod
    def read_row(self, state: StateSet, row: int) -> dict[str, np.ndarray]:
        """One stream's state copied to the host, keyed by state input name, each (1, ...).
        For inspection and tests: a step never needs it."""

    def state_extremes(self, state: StateSet, row: int) -> dict[str, tuple[float, float]] | None:
        """(min, max) of each state tensor of one stream, keyed by state input name, for the
        range guard; None where reading them would copy device state to the host (this
        default: a backend whose state lives on the host reads it in place)."""
        return None

    @abstractmethod
    def write_row(self, state: StateSet, row: int, values: Mapping[str, np.ndarray]) -> None:
        """Overwrite one stream's state from host arrays keyed by state input name, each (1, ...).
        For restoring a saved state and for tests."""

    def release(self, state: StateSet) -> None:
        """Free a state set's device memory now (optional: garbage collection frees host and
        onnxruntime memory)."""

    def close(self) -> None:
        """Release device resources (optional)."""
