"""onnxruntime backend: IOBinding with OrtValues on the session's device, ping-pong state sets.

Each state set is a dict of OrtValues allocated on the session's device (CPU, or CUDA for the
CUDA and TensorRT execution providers); a step binds one set as inputs and another as outputs,
so the state never leaves the device. Bindings are built once per (inputs, outputs) pair and
reused. The frame and prediction have one persistent OrtValue each.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.backends.base import Backend, StateSet
from runtime.errors import ConfigError
from runtime.onnx_session import open_session

PROVIDERS = {
    "cpu": (["CPUExecutionProvider"], "cpu"),
    "cuda": (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"),
    "tensorrt": (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                 "cuda"),
}


class OrtStateSet:
    """OrtValues (one per state input name) plus the bindings that read them as inputs."""

    _ids = itertools.count()

    def __init__(self, values: dict[str, ort.OrtValue]):
        self.values = values
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
        self._frame_spec, self._prediction_spec = spec.data_inputs[0], spec.data_outputs[0]
        self._frame = self._empty(self._frame_spec.concrete_shape(1), self._frame_spec.dtype)
        self._prediction = self._empty(self._prediction_spec.concrete_shape(1),
                                       self._prediction_spec.dtype)

    def new_state_set(self) -> StateSet:
        return OrtStateSet({p.input.name: self._empty(p.input.concrete_shape(1), p.input.dtype)
                            for p in self.metadata.spec.state})

    def zero(self, state: StateSet) -> None:
        for pair in self.metadata.spec.state:
            state.values[pair.input.name].update_inplace(
                np.zeros(pair.input.concrete_shape(1), dtype=pair.input.dtype))

    def run(self, frame: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        self._frame.update_inplace(frame)
        binding = inputs.bindings.get(outputs.key)
        if binding is None:
            binding = inputs.bindings[outputs.key] = self._bind(inputs, outputs)
        self.session.run_with_iobinding(binding)
        return self._prediction.numpy()

    def _bind(self, inputs: OrtStateSet, outputs: OrtStateSet) -> ort.IOBinding:
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._frame_spec.name, self._frame)
        binding.bind_ortvalue_output(self._prediction_spec.name, self._prediction)
        for pair in self.metadata.spec.state:
            binding.bind_ortvalue_input(pair.input.name, inputs.values[pair.input.name])
            binding.bind_ortvalue_output(pair.output.name, outputs.values[pair.input.name])
        return binding

    def _empty(self, shape: tuple[int, ...], dtype: str) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=dtype), self.device, 0)
