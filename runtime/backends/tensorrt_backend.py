"""TensorRT backend: TensorRT 10 name-based API, ``execute_async_v3`` on a non-default stream,
device buffers through cuda-python, optional CUDA graphs (one per ping-pong pairing).

The engine comes with its JSON sidecar (``stae build``), which holds the state protocol and the
engine's sha256: a truncated or swapped engine is refused before TensorRT sees it. Each state set
is one device buffer per state tensor; only the frame goes up and the prediction comes down.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from runtime.artifact import check_graph_io, read_engine_sidecar
from runtime.backends.base import Backend, StateSet
from runtime.cuda import DeviceBuffer, PinnedHostArray, cuda_call, cudart
from runtime.errors import ArtifactError, TensorRTUnavailableError
from runtime.files import sha256_file
from runtime.protocol import DYNAMIC_BATCH, TensorSpec


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
    """One device buffer per state input name."""

    _ids = itertools.count()

    def __init__(self, buffers: dict[str, DeviceBuffer]):
        self.buffers = buffers
        self.key = next(self._ids)


class TensorRTBackend(Backend):
    """A TensorRT engine on the current CUDA device."""

    def __init__(self, path: str | Path, cuda_graphs: bool = False):
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: no such engine file")
        self.metadata, build = read_engine_sidecar(path)
        if build.get("engine_sha256") and sha256_file(path) != build["engine_sha256"]:
            raise ArtifactError(f"{path}: its sha256 differs from the one its sidecar recorded "
                                f"at build time (truncated, or replaced by another engine)")
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
        for tensor in spec.inputs:
            self._context.set_input_shape(tensor.name, tensor.concrete_shape(1))
        self._stream = cuda_call(cudart().cudaStreamCreate(), "cudaStreamCreate")
        frame_spec, prediction_spec = spec.data_inputs[0], spec.data_outputs[0]
        self._frame_name, self._prediction_name = frame_spec.name, prediction_spec.name
        self._frame_host = PinnedHostArray(frame_spec.concrete_shape(1), frame_spec.dtype)
        self._prediction_host = PinnedHostArray(prediction_spec.concrete_shape(1),
                                                prediction_spec.dtype)
        self._frame_device = DeviceBuffer(self._frame_host.nbytes)
        self._prediction_device = DeviceBuffer(self._prediction_host.nbytes)
        self._cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, int], Any] = {}

    def new_state_set(self) -> StateSet:
        state = TrtStateSet({p.input.name: DeviceBuffer(_nbytes(p.input))
                             for p in self.metadata.spec.state})
        self.zero(state)
        return state

    def zero(self, state: StateSet) -> None:
        for buffer in state.buffers.values():
            buffer.zero_async(self._stream)
        cuda_call(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def run(self, frame: np.ndarray, inputs: StateSet, outputs: StateSet) -> np.ndarray:
        np.copyto(self._frame_host.array, frame)
        self._frame_host.copy_to_device_async(self._frame_device, self._stream)
        self._bind(inputs, outputs)
        if self._cuda_graphs:
            self._launch_graph(inputs, outputs)
        elif not self._context.execute_async_v3(int(self._stream)):
            raise ArtifactError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        self._prediction_host.copy_from_device_async(self._prediction_device, self._stream)
        cuda_call(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._prediction_host.array.copy()

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

    def close(self) -> None:
        for buffer in (self._frame_device, self._prediction_device):
            buffer.free()
        for host in (self._frame_host, self._prediction_host):
            host.free()


def _nbytes(tensor: TensorSpec) -> int:
    return int(np.prod(tensor.concrete_shape(1))) * np.dtype(tensor.dtype).itemsize


def _dtype_name(trt: Any, dtype: Any) -> str:
    names = {trt.DataType.FLOAT: "float32", trt.DataType.HALF: "float16",
             trt.DataType.INT8: "int8", trt.DataType.INT32: "int32",
             trt.DataType.INT64: "int64", trt.DataType.BOOL: "bool", trt.DataType.UINT8: "uint8"}
    return names.get(dtype, str(dtype))
