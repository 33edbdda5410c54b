"""The shared Predictor (one engine or session) and the Stream that owns one video's state.

    predictor = Predictor.load("stae.onnx")          # or "stae.engine" (+ its .json sidecar)
    stream = predictor.new_stream()                  # zero state, on the backend's device
    for frame in frames:                             # RGB float32 (3, H, W) in [0, 1]
        prediction = predictor.step(stream, frame)   # (3, H, W): the next frame
        future = predictor.step(stream, frame, horizon=4)   # or (4, 3, H, W), closed loop
    stream.reset()                                   # after a scene cut or a reconnect

The state stays on the device: each step reads one of the stream's two state sets and writes the
other, then they swap. A forecast runs closed loop on a third set (and the spare one), so the
stream's real state is untouched. Validation lives here; backends only run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.artifact import ArtifactMetadata
from runtime.backends.base import Backend
from runtime.errors import ConfigError, FrameFormatError, NonFiniteStateError
from runtime.protocol import IOSpec

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Stream:
    """The recurrent state of one video stream, owned on the predictor's device."""

    def __init__(self, backend: Backend):
        self._backend = backend
        self.current = backend.new_state_set()     # read by the next step
        self.spare = backend.new_state_set()       # written by the next step
        self.scratch = None                        # forecasts, allocated on first use
        self.steps = 0
        self.resets = 0
        self.nonfinite_resets = 0

    def reset(self) -> None:
        """Back to the zero state (a new scene): the next step starts a fresh warm-up."""
        self._backend.zero(self.current)
        self.steps = 0
        self.resets += 1


class Predictor:
    """One loaded model shared by any number of streams (steps are not thread-safe)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        spec = self.spec
        self._frame_spec = spec.data_inputs[0]
        if self._frame_spec.shape[0] not in (1, "batch"):
            raise ConfigError(f"{self._frame_spec.name}: this runtime drives batch-1 streams; the "
                              f"artifact's batch is {self._frame_spec.shape[0]}")

    @classmethod
    def load(cls, path: str | Path, provider: str = "cpu", threads: int | None = None,
             cuda_graphs: bool = False) -> "Predictor":
        """Open an ONNX file (onnxruntime, ``provider`` cpu/cuda/tensorrt) or a TensorRT engine."""
        if Path(path).suffix in ENGINE_SUFFIXES:
            from runtime.backends.tensorrt_backend import TensorRTBackend

            return cls(TensorRTBackend(path, cuda_graphs=cuda_graphs))
        from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return cls(OnnxRuntimeBackend(path, provider, threads))

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.backend.metadata

    @property
    def spec(self) -> IOSpec:
        return self.backend.metadata.spec

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) of the frames this model takes, pixels."""
        return self._frame_spec.per_sample_shape[1], self._frame_spec.per_sample_shape[2]

    def new_stream(self) -> Stream:
        return Stream(self.backend)

    def step(self, stream: Stream, frame: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Feed ``frame`` (RGB float32 (3, H, W) in [0, 1]) and predict.

        Returns the next frame (3, H, W) float32, or with ``horizon=K`` the next K frames
        (K, 3, H, W), the later ones closed loop without touching the stream's real state.
        Raises :class:`FrameFormatError` for a wrong frame and :class:`NonFiniteStateError`
        (after resetting the stream) when the model produces NaN/Inf.
        """
        model_frame = self._validated(frame)
        if horizon is not None and horizon < 1:
            raise ConfigError(f"horizon: expected >= 1, got {horizon}")
        prediction = self.backend.run(model_frame, stream.current, stream.spare)
        stream.current, stream.spare = stream.spare, stream.current
        stream.steps += 1
        if not np.isfinite(prediction.sum()):      # NaN/Inf in the state shows up here
            step = stream.steps
            stream.reset()
            stream.nonfinite_resets += 1
            raise NonFiniteStateError(
                f"step {step}: the model produced NaN/Inf; the stream's state was reset "
                f"({stream.nonfinite_resets} such reset(s) so far)")
        first = prediction[0].astype(np.float32)
        if horizon is None:
            return first
        return np.stack([first, *self._forecast(stream, prediction, horizon - 1)])

    def _forecast(self, stream: Stream, prediction: np.ndarray, steps: int) -> list[np.ndarray]:
        if stream.scratch is None:
            stream.scratch = self.backend.new_state_set()
        source, targets, frames = stream.current, (stream.scratch, stream.spare), []
        for k in range(steps):
            prediction = self.backend.run(prediction, source, targets[k % 2])
            if not np.isfinite(prediction.sum()):
                raise NonFiniteStateError(f"forecast step {k + 2}: NaN/Inf (closed loop "
                                          f"diverged); the stream's real state is unchanged")
            frames.append(prediction[0].astype(np.float32))
            source = targets[k % 2]
        return frames

    def _validated(self, frame: np.ndarray) -> np.ndarray:
        expected = self._frame_spec.per_sample_shape
        if not isinstance(frame, np.ndarray):
            raise FrameFormatError(f"tensor '{self._frame_spec.name}': expected a numpy array, "
                                   f"got {type(frame).__name__}")
        if frame.shape != expected:
            hint = " (a camera frame? convert it with runtime.frames.bgr_to_model_frame)" \
                if frame.ndim == 3 and frame.shape[-1] == 3 else ""
            raise FrameFormatError(f"tensor '{self._frame_spec.name}': got shape {frame.shape}, "
                                   f"expected {expected} (RGB, channels first){hint}")
        if frame.dtype != np.float32:
            raise FrameFormatError(f"tensor '{self._frame_spec.name}': got dtype {frame.dtype}, "
                                   f"expected float32 in [0, 1]")
        return frame[None].astype(self._frame_spec.dtype, copy=False)
