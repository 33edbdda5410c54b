"""TensorRT backend: TensorRT 10 name-based API, ``execute_async_v3`` on a non-default stream,
device buffers through cuda-python, optional CUDA graphs (one per ping-pong pairing).

The engine comes with its JSON sidecar (``stae build``), which holds the state protocol and the
engine's sha256: a truncated or swapped engine is refused before TensorRT sees it. Each state set
is one device buffer per state tensor; only the frame goes up and the prediction comes down.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from stae_deploy.runtime.artifact import check_graph_io, read_engine_sidecar, require_artifact_file
from stae_deploy.runtime.backends.base import Backend, StateSet
from stae_deploy.runtime.cuda_runtime import (DeviceBuffer, PinnedHostArray, copy_device_to_device, copy_device_to_host,
                          copy_host_to_device, cuda_call, cudart, zero_device)
from stae_deploy.runtime.errors import ArtifactError, ConfigError, TensorRTUnavailableError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, TensorSpec


def require_tensorrt() -> None:
    """Raise :class:`TensorRTUnavailableError`, in one clear sentence, unless TensorRT imports.

    Callers then ``import tensorrt as trt`` themselves, so the type checker sees TensorRT's API.
    """
    try:
        import tensorrt
    except ImportError:
        tensorrt = None
    if tensorrt is None or not hasattr(tensorrt, "Builder"):   # type stubs alone import empty
        raise TensorRTUnavailableError(
            "TensorRT is not installed on this machine: build engines where TensorRT 10+ and a "
            "GPU are (JetPack or `pip install tensorrt`), or run the printed trtexec line there")


class TrtStateSet:
    """One device buffer per state input name, ``batch`` rows each."""

    _ids = itertools.count()

    def __init__(self, batch: int, buffers: dict[str, DeviceBuffer]):
        self.batch = batch
        self.buffers = buffers
        self.key = next(self._ids)


class TensorRTBackend(Backend):
    """A TensorRT engine on the current CUDA device."""

    def __init__(self, path: str | Path, cuda_graphs: bool = False):
        path = Path(path)
        require_artifact_file(path, "engine", "a TensorRT engine from `stae build`")
        self.metadata, build = read_engine_sidecar(path)
        # Checked before TensorRT is needed: a wrong engine is refused on any machine.
        recorded, actual = build.get("engine_sha256"), sha256_file(path)
        if not isinstance(recorded, str) or not recorded:
            raise ArtifactError(f"{path}: its sidecar records no engine_sha256, so the engine "
                                f"cannot be verified; rebuild it with `stae build`")
        if actual != recorded:
            raise ArtifactError(f"{path}: its sha256 differs from the one its sidecar recorded "
                                f"at build time ({actual[:12]}... vs {recorded[:12]}...; "
                                f"truncated, or replaced by another engine)")
        require_tensorrt()
        import tensorrt as trt

        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ArtifactError(f"{path}: TensorRT cannot deserialize it (built by another "
                                f"TensorRT version or for another GPU?)")
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        specs = {name: TensorSpec(name, tuple(d if d >= 0 else DYNAMIC_BATCH
                                              for d in engine.get_tensor_shape(name)),
                                  _dtype_name(trt, engine.get_tensor_dtype(name)))
                 for name in names}
        is_input = {name: engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT for name in names}
        check_graph_io(self.metadata.spec, [specs[n] for n in names if is_input[n]],
                       [specs[n] for n in names if not is_input[n]], str(path))
        self._context = engine.create_execution_context()
        spec = self.metadata.spec
        static_batch = self.metadata.spec.batch
        self._max_batch = int(build.get("build_config", {}).get("max_batch", 1)) \
            if static_batch == DYNAMIC_BATCH else int(static_batch)
        self._batch = 0                               # the batch the context's shapes are set for
        self._stream = cuda_call(cudart().cudaStreamCreate(), "cudaStreamCreate")
        frame_spec, prediction_spec = spec.frame, spec.prediction
        self._frame_name, self._prediction_name = frame_spec.name, prediction_spec.name
        self._frame_host = PinnedHostArray(frame_spec.concrete_shape(self._max_batch),
                                           frame_spec.dtype)
        self._prediction_host = PinnedHostArray(prediction_spec.concrete_shape(self._max_batch),
                                                prediction_spec.dtype)
        self._frame_device = DeviceBuffer(self._frame_host.nbytes)
        self._prediction_device = DeviceBuffer(self._prediction_host.nbytes)
        self._cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, int], Any] = {}

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def new_state_set(self, batch: int = 1) -> StateSet:
        if not 1 <= batch <= self._max_batch:
            raise ConfigError(f"batch {batch}: this engine takes 1 to {self._max_batch} streams "
                              f"per step (rebuild with `stae build --max-batch N`)")
        state = TrtStateSet(batch, {p.input.name: DeviceBuffer(batch * p.input.sample_nbytes)
                                    for p in self.metadata.spec.state})
        self.zero(state)
        return state

    def zero(self, state: StateSet, row: int | None = None) -> None:
        for pair in self.metadata.spec.state:
            row_bytes = pair.input.sample_nbytes
            zero_device(state.buffers[pair.input.name].ptr + (row or 0) * row_bytes,
                        row_bytes * (state.batch if row is None else 1), self._stream)

    def copy_row(self, source: StateSet, source_row: int, target: StateSet,
                 target_row: int) -> None:
        for pair in self.metadata.spec.state:
            name, row_bytes = pair.input.name, pair.input.sample_nbytes
            copy_device_to_device(target.buffers[name].ptr + target_row * row_bytes,
                                  source.buffers[name].ptr + source_row * row_bytes, row_bytes,
                                  self._stream)

    def read_row(self, state: StateSet, row: int) -> dict[str, np.ndarray]:
        host: dict[str, np.ndarray] = {}
        for pair in self.metadata.spec.state:
            name = pair.input.name
            host[name] = np.empty(pair.input.concrete_shape(1), dtype=pair.input.dtype)
            copy_device_to_host(host[name],
                                state.buffers[name].ptr + row * pair.input.sample_nbytes)
        return host

    def write_row(self, state: StateSet, row: int, values: Mapping[str, np.ndarray]) -> None:
        for pair in self.metadata.spec.state:
            name = pair.input.name
            pair.input.check_array(values[name])
            copy_host_to_device(state.buffers[name].ptr + row * pair.input.sample_nbytes,
                                values[name])

    def run(self, frames: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        batch = inputs.batch
        if batch != self._batch:
            for tensor in self.metadata.spec.inputs:
                self._context.set_input_shape(tensor.name, tensor.concrete_shape(batch))
            self._batch = batch
        np.copyto(self._frame_host.array[:batch], frames)
        self._frame_host.copy_to_device_async(self._frame_device, self._stream)
        self._bind(inputs, outputs)
        if self._cuda_graphs:
            self._launch_graph(inputs, outputs)
        elif not self._context.execute_async_v3(int(self._stream)):
            raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        self._prediction_host.copy_from_device_async(self._prediction_device, self._stream)
        cuda_call(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._prediction_host.array[:batch].copy()

    def _bind(self, inputs: TrtStateSet, outputs: TrtStateSet) -> None:
        context = self._context
        context.set_tensor_address(self._frame_name, self._frame_device.ptr)
        context.set_tensor_address(self._prediction_name, self._prediction_device.ptr)
        for pair in self.metadata.spec.state:
            context.set_tensor_address(pair.input.name, inputs.buffers[pair.input.name].ptr)
            context.set_tensor_address(pair.output.name, outputs.buffers[pair.input.name].ptr)

    def _launch_graph(self, inputs: TrtStateSet, outputs: TrtStateSet) -> None:
        """One graph per (inputs, outputs) pairing: a graph bakes in the tensor addresses."""
        runtime = cudart()
        graph_exec = self._graphs.get((inputs.key, outputs.key))
        if graph_exec is None:
            # A first plain run lets TensorRT finish lazy set-up outside the capture. It computes
            # exactly the step being asked for, so its result is the step's result.
            if not self._context.execute_async_v3(int(self._stream)):
                raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            cuda_call(runtime.cudaStreamBeginCapture(
                self._stream, runtime.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
                "cudaStreamBeginCapture")
            self._context.execute_async_v3(int(self._stream))
            graph = cuda_call(runtime.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
            graph_exec = cuda_call(runtime.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            self._graphs[(inputs.key, outputs.key)] = graph_exec
            return
        cuda_call(runtime.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")

    def release(self, state: StateSet) -> None:
        for buffer in state.buffers.values():
            buffer.free()

    def close(self) -> None:
        for buffer in (self._frame_device, self._prediction_device):
            buffer.free()
        for host in (self._frame_host, self._prediction_host):
            host.free()



def _dtype_name(trt: Any, dtype: Any) -> str:
    names = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16",
             trt.DataType.INT8: "int8", trt.DataType.INT32: "int32",
             trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool", trt.DataType.UINT8: "uint8"}
    return names.get(dtype, str(dtype))
