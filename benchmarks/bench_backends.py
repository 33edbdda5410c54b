"""The backends `stae bench` times: one small class each behind :class:`Backend`.

Every backend is opened from a file in the bench's work folder (``stae_deploy.benchmarks.bench_artifacts``) and
carries its own recurrent state from step to step. Imports are lazy, so a process that opens an
onnxruntime backend never loads torch (``stae_deploy.benchmarks.bench_memory`` relies on it).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stae_deploy.runtime.protocol import IOSpec

if TYPE_CHECKING:
    import onnxruntime as ort


@dataclass(frozen=True)
class BackendKind:
    """A backend as the bench names it: ``--backends`` key, row label, and a caveat if any."""

    key: str
    label: str
    note: str | None = None


BACKENDS: dict[str, BackendKind] = {kind.key: kind for kind in (
    BackendKind("eager", "pytorch eager"),
    BackendKind("plain", "onnxruntime fp32 plain"),
    BackendKind("fast", "onnxruntime fp32 fast"),
    BackendKind("fp16", "onnxruntime fp16 graph (fp32 compute on CPU)",
                "accuracy-only: onnxruntime's CPU provider computes this graph's FP16 "
                "convolutions in FP32; not an FP16 speed"),
    BackendKind("int8", "onnxruntime int8 (onnxruntime target)"),
)}
EAGER = "eager"


class Backend(ABC):
    """One model ready to step on frames of one size and batch, its state held inside."""

    spec: IOSpec
    batch: int

    @abstractmethod
    def step(self, frame: np.ndarray) -> None:
        """One step on ``frame`` (batch, 3, H, W) float32 in [0, 1]; the state advances."""

    @abstractmethod
    def weight_bytes(self) -> int:
        """Bytes of the model's weights as this backend stores them."""

    def state_bytes(self) -> int:
        """Bytes of all state input tensors of one step, from the protocol (at ``batch``)."""
        return sum(array.nbytes for array in self.spec.zero_state(self.batch).values())


class EagerBackend(Backend):
    """The reference ``STAE.forward(frame, *state)`` under ``torch.no_grad()``."""

    def __init__(self, checkpoint: str | Path, frame_size: tuple[int, int], batch: int,
                 threads: int):
        import torch

        from stae_deploy.stae_ref.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        self._torch = torch
        self.model, _ = load_checkpoint(checkpoint)
        self.model.config = self.model.config.with_frame_size(frame_size)
        self.spec, self.batch = self.model.spec(batch=batch), batch
        state = self.model.zero_state(batch)
        self._state = tuple(state[pair.input.name] for pair in self.spec.state)

    def step(self, frame: np.ndarray) -> None:
        with self._torch.no_grad():
            _, *next_state = self.model(self._torch.from_numpy(frame), *self._state)
        self._state = tuple(next_state)

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters())


def no_spinning(options: ort.SessionOptions) -> None:
    """Session options for timing next to other backends: onnxruntime's idle workers sleep
    instead of spinning, which on a small machine stole the cores of the backend timed next
    (measured on 2 cores: PyTorch eager steps 10x slower beside a spinning session)."""
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")


class OnnxBackend(Backend):
    """An ONNX artifact stepped by :class:`stae_deploy.runtime.onnx_session.OnnxStepper` (CPU provider),
    its workers not spinning between steps (:func:`no_spinning`)."""

    def __init__(self, path: str | Path, batch: int, threads: int | None):
        """threads: intra-op threads (None: onnxruntime's default)."""
        from stae_deploy.runtime.onnx_session import OnnxStepper

        self.path = Path(path)
        self.stepper = OnnxStepper(path, threads=threads, configure=no_spinning)
        self.spec, self.batch = self.stepper.spec, batch
        self._state = self.stepper.zero_state(batch)

    def step(self, frame: np.ndarray) -> None:
        _, self._state, _ = self.stepper.step(frame, self._state)

    def weight_bytes(self) -> int:
        """Bytes of the graph's initializers."""
        from onnx.helper import tensor_dtype_to_np_dtype

        from stae_deploy.export.onnx_graph import load_model

        return sum(int(np.prod(init.dims)) * tensor_dtype_to_np_dtype(init.data_type).itemsize
                   for init in load_model(self.path).graph.initializer)


def open_backend(key: str, artifact: str | Path, frame_size: tuple[int, int], batch: int,
                 threads: int) -> Backend:
    """Open backend ``key`` (a :data:`BACKENDS` key) from its artifact.

    artifact: a checkpoint for ``eager``, an ONNX file otherwise. frame_size: (H, W) pixels, used
    by eager (an ONNX graph has its own). threads: intra-op threads of torch or onnxruntime.
    """
    if key == EAGER:
        return EagerBackend(artifact, frame_size, batch, threads)
    return OnnxBackend(artifact, batch, threads)
