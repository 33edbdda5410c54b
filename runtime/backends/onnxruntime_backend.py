"""onnxruntime backend: IOBinding with OrtValues on the session's device, ping-pong state sets.

Each state set is a dict of OrtValues (one per state input name, ``batch`` rows each) allocated
on the session's device (CPU, or CUDA for the CUDA and TensorRT execution providers); a step
binds one set as inputs and another as outputs, so the state never leaves the device. Bindings
are built once per (inputs, outputs) pair and reused. Frames and predictions have one persistent
OrtValue per batch size. On the CPU an OrtValue wraps a numpy array without a copy, so rows move
with numpy; on CUDA they move with device-to-device copies at the OrtValue's address.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort

from stae_deploy.runtime.backends.base import Backend, StateSet
from stae_deploy.runtime.cuda_runtime import (copy_device_to_device, copy_device_to_host, copy_host_to_device,
                          zero_device)
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.onnx_session import open_session
from stae_deploy.runtime.protocol import TensorSpec

PROVIDERS = {
    "cpu": (["CPUExecutionProvider"], "cpu"),
    "cuda": (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
    "tensorrt": (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                 "cuda"),
}


class OrtStateSet:
    """OrtValues keyed by state input name (``batch`` rows each), the host arrays behind them on
    the CPU, and the bindings that read this set as inputs."""

    _ids = itertools.count()

    def __init__(self, batch: int, values: dict[str, ort.OrtValue],
                 arrays: dict[str, np.ndarray] | None):
        self.batch = batch
        self.values = values
        self.arrays = arrays                         # CPU only: the memory of ``values``
        self.key = next(self._ids)
        self.bindings: dict[int, ort.IOBinding] = {}   # output set key -> binding


class OnnxRuntimeBackend(Backend):
    """An ONNX artifact in onnxruntime with the given provider ("cpu", "cuda" or "tensorrt")."""

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None):
        if provider not in PROVIDERS:
            raise ConfigError(f"provider: expected one of {sorted(PROVIDERS)}, got {provider!r}")
        providers, self.device = PROVIDERS[provider]
        if providers[0] not in ort.get_available_providers():
            raise ConfigError(
                f"provider {provider!r}: this onnxruntime has no {providers[0]} (available: "
                f"{ort.get_available_providers()}); install onnxruntime-gpu or use --provider cpu")
        self.session, self.metadata = open_session(path, providers, threads)
        spec = self.metadata.spec
        self._frame_spec, self._prediction_spec = spec.frame, spec.prediction
        self._io: dict[int, tuple[ort.OrtValue, ort.OrtValue]] = {}   # batch -> frame, prediction

    def new_state_set(self, batch: int = 1) -> StateSet:
        tensors = [p.input for p in self.metadata.spec.state]
        if self.device == "cpu":
            arrays = {t.name: np.zeros(t.concrete_shape(batch), dtype=t.dtype) for t in tensors}
            return OrtStateSet(batch, {name: ort.OrtValue.ortvalue_from_numpy(array)
                                       for name, array in arrays.items()}, arrays)
        return OrtStateSet(batch, {t.name: self._empty(t, batch) for t in tensors}, None)

    def zero(self, state: StateSet, row: int | None = None) -> None:
        rows = slice(None) if row is None else slice(row, row + 1)
        for name, value in state.values.items():
            if state.arrays is not None:
                state.arrays[name][rows] = 0
            else:
                row_bytes = self.metadata.spec.tensor(name).sample_nbytes
                count = state.batch if row is None else 1
                zero_device(value.data_ptr() + (row or 0) * row_bytes, count * row_bytes)

    def copy_row(self, source: StateSet, source_row: int, target: StateSet,
                 target_row: int) -> None:
        for name in source.values:
            if source.arrays is not None and target.arrays is not None:
                target.arrays[name][target_row] = source.arrays[name][source_row]
            else:
                row_bytes = self.metadata.spec.tensor(name).sample_nbytes
                copy_device_to_device(target.values[name].data_ptr() + target_row * row_bytes,
                                      source.values[name].data_ptr() + source_row * row_bytes,
                                      row_bytes)

    def read_row(self, state: StateSet, row: int) -> dict[str, np.ndarray]:
        host: dict[str, np.ndarray] = {}
        for pair in self.metadata.spec.state:
            name = pair.input.name
            if state.arrays is not None:
                host[name] = state.arrays[name][row:row + 1].copy()
            else:
                host[name] = np.empty(pair.input.concrete_shape(1), dtype=pair.input.dtype)
                copy_device_to_host(host[name], state.values[name].data_ptr()
                                    + row * pair.input.sample_nbytes)
        return host

    def state_extremes(self, state: StateSet, row: int) -> dict[str, tuple[float, float]] | None:
        if state.arrays is None:                       # on the GPU: not without a copy
            return None
        return {name: (float(values[row].min()), float(values[row].max()))
                for name, values in state.arrays.items()}

    def write_row(self, state: StateSet, row: int, values: Mapping[str, np.ndarray]) -> None:
        for pair in self.metadata.spec.state:
            name = pair.input.name
            pair.input.check_array(values[name])
            if state.arrays is not None:
                state.arrays[name][row:row + 1] = values[name]
            else:
                copy_host_to_device(state.values[name].data_ptr() + row * pair.input.sample_nbytes,
                                    values[name])

    def run(self, frames: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        frame, prediction = self._batch_io(inputs.batch)
        frame.update_inplace(frames)
        binding = inputs.bindings.get(outputs.key)
        if binding is None:
            binding = inputs.bindings[outputs.key] = self._bind(inputs, outputs)
        self.session.run_with_iobinding(binding)
        return prediction.numpy().copy()      # numpy() is a view the next run overwrites

    def _batch_io(self, batch: int) -> tuple[ort.OrtValue, ort.OrtValue]:
        """The persistent frame and prediction OrtValues of one batch size."""
        if batch not in self._io:
            self._io[batch] = (self._empty(self._frame_spec, batch),
                               self._empty(self._prediction_spec, batch))
        return self._io[batch]

    def _bind(self, inputs: OrtStateSet, outputs: OrtStateSet) -> ort.IOBinding:
        frame, prediction = self._batch_io(inputs.batch)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._frame_spec.name, frame)
        binding.bind_ortvalue_output(self._prediction_spec.name, prediction)
        for pair in self.metadata.spec.state:
            binding.bind_ortvalue_input(pair.input.name, inputs.values[pair.input.name])
            binding.bind_ortvalue_output(pair.output.name, outputs.values[pair.input.name])
        return binding

    def _empty(self, tensor: TensorSpec, batch: int) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(
            np.zeros(tensor.concrete_shape(batch), dtype=tensor.dtype), self.device, 0)
