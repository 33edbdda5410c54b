"""The shared Predictor (one engine or session) and the Stream that owns one video's state.

    predictor = Predictor.load("stae.onnx")          # or "stae.engine" (+ its .json sidecar)
    stream = predictor.new_stream()                  # zero state, on the backend's device
    for frame in frames:                             # RGB float32 (3, H, W) in [0, 1]
        prediction = predictor.step(stream, frame)   # (3, H, W): the next frame
        future = predictor.step(stream, frame, horizon=4)   # or (4, 3, H, W), closed loop
    stream.reset()                                   # after a scene cut or a reconnect

Many cameras: ``predictor.step_many([stream_a, stream_b], [frame_a, frame_b])`` runs the
streams as one batched step of a dynamic-batch model (``stae export --dynamic-batch``); a stream
that has no new frame is simply left out and its state does not advance. ``step`` is the
one-stream case of the same code.

Each stream owns two state sets on the device: a step reads one and writes the other, then they
swap. A batched step gathers the streams' states into the rows of a batched set on the device,
runs once, and scatters the new states back; a single stream runs on its own sets, no copy. A
forecast runs closed loop on spare sets, so the streams' real states are untouched. Validation
lives here; backends only run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from stae_deploy.runtime.artifact import ENGINE_SUFFIXES, ArtifactMetadata
from stae_deploy.runtime.backends.base import Backend, StateSet
from stae_deploy.runtime.errors import ConfigError, FrameFormatError, NonFiniteStateError
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec, TensorSpec


class StreamState(Protocol):
    """What the streaming loop needs of one stream's state, wherever it lives (here, or on a
    server: ``stae_deploy.serving.triton_predictor``).

    name: the stream's name in messages (its source). steps: steps since the last reset.
    resets / nonfinite_resets: times it restarted from zero (asked for / after NaN or Inf).
    state_losses: times the state was lost where it lives and restarted from zero (a server
    that restarted); always 0 in process.
    """

    name: str
    steps: int
    resets: int
    nonfinite_resets: int
    state_losses: int

    def reset(self) -> None: ...


class StepModel(Protocol):
    """A model that steps streams: a :class:`Predictor`, or a model served by Triton."""

    @property
    def frame_hw(self) -> tuple[int, int]: ...

    @property
    def metadata(self) -> ArtifactMetadata: ...

    @property
    def max_batch(self) -> int | None: ...

    def new_stream(self, name: str = "") -> Any: ...

    def step_many(self, streams: Sequence[Any], frames: Sequence[np.ndarray],
                  horizon: int = 1) -> list[np.ndarray | NonFiniteStateError]: ...

    def state_extremes(self, stream: Any) -> dict[str, tuple[float, float]] | None:
        """(min, max) of each of ``stream``'s state tensors now; None where the state is not
        here to read without a copy (on the device, or on a server)."""
        ...


class Stream:
    """The recurrent state of one video stream, owned on the predictor's device."""

    def __init__(self, backend: Backend, name: str = ""):
        self._backend = backend
        self.name = name
        self.current = backend.new_state_set()     # read by the next step
        self.spare = backend.new_state_set()       # written by the next step
        self.scratch: StateSet | None = None       # forecasts, allocated on first use
        self.steps = 0
        self.resets = 0
        self.nonfinite_resets = 0
        self.state_losses = 0          # the state lives here: never lost

    def reset(self) -> None:
        """Back to the zero state (a new scene): the next step starts a fresh warm-up."""
        self._backend.zero(self.current)
        self.steps = 0
        self.resets += 1

    def close(self) -> None:
        """Leave: release the stream's device buffers (the stream cannot step afterwards)."""
        for state in (self.current, self.spare, self.scratch):
            if state is not None:
                self._backend.release(state)
        self.scratch = None

    def state(self) -> dict[str, np.ndarray]:
        """A host copy of the state the next step reads, keyed by state input name, each
        (1, ...). For inspection, saving and tests; stepping never copies state to the host."""
        return self._backend.read_row(self.current, 0)

    def load_state(self, values: dict[str, np.ndarray]) -> None:
        """Replace the state the next step reads (host arrays keyed by state input name, each
        (1, ...), checked against the protocol)."""
        self._backend.write_row(self.current, 0, values)


class _BatchSets:
    """The device state sets one batched step of ``batch`` streams runs on."""

    def __init__(self, backend: Backend, batch: int):
        self.inputs = backend.new_state_set(batch)      # the streams' states, gathered
        self.outputs = backend.new_state_set(batch)     # the new states, scattered back
        self.scratch: StateSet | None = None            # forecasts, allocated on first use


class Predictor:
    """One loaded model shared by any number of streams (steps are not thread-safe).

    max_batch: the most streams one batched step runs (None: as many as the model takes; a
    static batch-1 model steps its streams one at a time).
    """

    def __init__(self, backend: Backend, max_batch: int | None = None):
        self.backend = backend
        spec = self.spec
        self._frame_spec = spec.frame
        if spec.batch not in (1, DYNAMIC_BATCH):
            raise ConfigError(f"{self._frame_spec.name}: the artifact's batch is fixed at "
                              f"{spec.batch}; export with --dynamic-batch (or batch 1) for streams")
        limit = backend.max_batch
        if max_batch is not None and (max_batch < 1 or (limit is not None and max_batch > limit)):
            raise ConfigError(f"max_batch: expected 1 to {limit or 'any'} (what the model takes), "
                              f"got {max_batch}")
        self.max_batch = max_batch if max_batch is not None else limit
        self._batch_sets: dict[int, _BatchSets] = {}

    @classmethod
    def load(cls, path: str | Path, provider: str = "cpu", threads: int | None = None,
             cuda_graphs: bool = False, max_batch: int | None = None) -> "Predictor":
        """Open an ONNX file (onnxruntime, ``provider`` cpu/cuda/tensorrt) or a TensorRT engine."""
        if Path(path).suffix in ENGINE_SUFFIXES:
            from stae_deploy.runtime.backends.tensorrt_backend import TensorRTBackend

            return cls(TensorRTBackend(path, cuda_graphs=cuda_graphs), max_batch)
        from stae_deploy.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

        return cls(OnnxRuntimeBackend(path, provider, threads), max_batch)

    @property
    def metadata(self) -> ArtifactMetadata:
        return self.backend.metadata

    @property
    def spec(self) -> IOSpec:
        return self.backend.metadata.spec

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) of the frames this model takes, pixels."""
        return self.spec.frame_size

    def new_stream(self, name: str = "") -> Stream:
        """A stream with the zero state; it joins batched steps whenever it is passed in.
        name: how messages call it (its source)."""
        return Stream(self.backend, name)

    def state_extremes(self, stream: Stream) -> dict[str, tuple[float, float]] | None:
        """(min, max) of each of ``stream``'s state tensors now, keyed by state input name;
        None where the backend keeps the state on the device (no host copy per step)."""
        return self.backend.state_extremes(stream.current, 0)

    def step(self, stream: Stream, frame: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Feed ``frame`` (RGB float32 (3, H, W) in [0, 1]) and predict.

        Returns the next frame (3, H, W) float32, or with ``horizon=K`` the next K frames
        (K, 3, H, W), the later ones closed loop without touching the stream's real state.
        Raises :class:`FrameFormatError` for a wrong frame and :class:`NonFiniteStateError`
        (after resetting the stream) when the model produces NaN/Inf.
        """
        [result] = self.step_many([stream], [frame], 1 if horizon is None else horizon)
        if isinstance(result, NonFiniteStateError):
            raise result
        return result[0] if horizon is None else result

    def step_many(self, streams: Sequence[Stream], frames: Sequence[np.ndarray],
                  horizon: int = 1) -> list[np.ndarray | NonFiniteStateError]:
        """One step of several streams, batched up to :attr:`max_batch` streams per run.

        frames[i] (RGB float32 (3, H, W) in [0, 1]) is fed to streams[i]. Returns, per stream,
        its next ``horizon`` frames (horizon, 3, H, W) float32, or the
        :class:`NonFiniteStateError` of that stream alone (its state is then reset and counted
        in ``stream.nonfinite_resets``; the other streams are unaffected). Raises
        :class:`FrameFormatError` for a wrong frame before any stream advances.
        """
        if len(streams) != len(frames):
            raise ConfigError(f"step_many: {len(streams)} streams but {len(frames)} frames")
        if len({id(s) for s in streams}) != len(streams):
            raise ConfigError("step_many: a stream appears twice; one frame per stream per step")
        if horizon < 1:
            raise ConfigError(f"horizon: expected >= 1, got {horizon}")
        if any(s._backend is not self.backend for s in streams):
            raise ConfigError("step_many: a stream belongs to another predictor")
        model_frames = [validated_frame(self._frame_spec, frame) for frame in frames]
        group = self.max_batch or len(streams)
        results: list[np.ndarray | NonFiniteStateError] = []
        for start in range(0, len(streams), group):
            results += self._step_group(streams[start:start + group],
                                        np.stack(model_frames[start:start + group]), horizon)
        return results

    def _step_group(self, streams: Sequence[Stream], frames: np.ndarray, horizon: int
                    ) -> list[np.ndarray | NonFiniteStateError]:
        backend, batch = self.backend, len(streams)
        sets: Stream | _BatchSets    # whose sets the step runs on (and whose scratch it uses)
        if batch == 1:
            sets = streams[0]
            inputs, outputs = sets.current, sets.spare
        else:
            if batch not in self._batch_sets:
                self._batch_sets[batch] = _BatchSets(backend, batch)
            sets = self._batch_sets[batch]
            inputs, outputs = sets.inputs, sets.outputs
            for row, stream in enumerate(streams):
                backend.copy_row(stream.current, 0, inputs, row)
        predictions = backend.run(frames, inputs, outputs)
        for row, stream in enumerate(streams):
            if batch > 1:
                backend.copy_row(outputs, row, stream.spare, 0)
            stream.current, stream.spare = stream.spare, stream.current
            stream.steps += 1
        results: list[np.ndarray | NonFiniteStateError] = []
        finite = np.isfinite(predictions.reshape(batch, -1).sum(axis=1))
        for row, stream in enumerate(streams):
            if finite[row]:
                results.append(predictions[row:row + 1].astype(np.float32))
                continue
            step = stream.steps
            stream.reset()
            stream.nonfinite_resets += 1
            results.append(NonFiniteStateError(
                f"step {step}: the model produced NaN/Inf; the stream's state was reset "
                f"({stream.nonfinite_resets} such reset(s) so far)"))
        if horizon > 1 and finite.any():
            # The new states are in ``outputs``; ``inputs`` is free now (a single stream's
            # ``inputs`` is its spare set, which the next step overwrites anyway).
            if sets.scratch is None:
                sets.scratch = backend.new_state_set(batch)
            forecast = self._forecast(predictions, outputs, (sets.scratch, inputs), horizon - 1)
            for row in np.flatnonzero(finite):
                frames_k = np.concatenate([predictions[row:row + 1],
                                           forecast[:, row]]).astype(np.float32)
                diverged = np.flatnonzero(~np.isfinite(frames_k.reshape(horizon, -1).sum(axis=1)))
                results[row] = frames_k if not diverged.size else NonFiniteStateError(
                    f"forecast step {diverged[0] + 1}: NaN/Inf (closed loop diverged); the "
                    f"stream's real state is unchanged")
        return results

    def _forecast(self, predictions: np.ndarray, source: StateSet,
                  targets: tuple[StateSet, StateSet], steps: int) -> np.ndarray:
        """Closed loop from ``source``: ``steps`` more predictions (steps, B, 3, H, W), each
        fed back as the next frame, the states alternating between the two ``targets``."""
        frames = []
        for k in range(steps):
            predictions = self.backend.run(predictions, source, targets[k % 2])
            frames.append(predictions)
            source = targets[k % 2]
        return np.stack(frames)


def validated_frame(spec: TensorSpec, frame: np.ndarray) -> np.ndarray:
    """``frame`` checked against the frame input ``spec`` (shape (3, H, W), float32, finite, in
    [0, 1]) and cast to the graph's dtype; :class:`FrameFormatError` naming the tensor if not."""
    name, expected = spec.name, spec.per_sample_shape
    if not isinstance(frame, np.ndarray):
        raise FrameFormatError(f"tensor '{name}': expected a numpy array, "
                               f"got {type(frame).__name__}")
    if frame.shape != expected:
        hint = " (a camera frame? convert it with stae_deploy.runtime.frames.bgr_to_model_frame)" \
            if frame.ndim == 3 and frame.shape[-1] == 3 else ""
        raise FrameFormatError(f"tensor '{name}': got shape {frame.shape}, "
                               f"expected {expected} (RGB, channels first){hint}")
    if frame.dtype != np.float32:
        raise FrameFormatError(f"tensor '{name}': got dtype {frame.dtype}, "
                               f"expected float32 in [0, 1]")
    low, high = float(frame.min()), float(frame.max())
    if not (0.0 <= low and high <= 1.0):      # also catches NaN, whose comparisons fail
        hint = " (divide 8-bit pixels by 255)" if high > 1.0 and high <= 255.0 else ""
        raise FrameFormatError(f"tensor '{name}': values span [{low:g}, {high:g}], "
                               f"expected finite values in [0, 1]{hint}")
    return frame.astype(spec.dtype, copy=False)
