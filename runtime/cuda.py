"""CUDA through cuda-python (``cuda.bindings``, what NVIDIA's TensorRT samples use), with every
call routed through :func:`cuda_call`, so a failure names the call and the CUDA error."""
from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from runtime.errors import CudaError


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module (imported on first use: CPU installs may lack it)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        raise CudaError("cuda-python is not installed: `pip install cuda-python` matching your "
                        "CUDA driver (on Jetson, JetPack's CUDA major.minor)") from None


def cuda_call(result: Any, call: str) -> Any:
    """Unpack a cuda-python result ``(err, *values)``; raise :class:`CudaError` naming ``call``."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        raise CudaError(f"{call} failed: {name} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


class DeviceBuffer:
    """``nbytes`` of device memory (cudaMalloc: 256-byte aligned, as TensorRT requires)."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr = int(cuda_call(cudart().cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def zero_async(self, stream: Any) -> None:
        cuda_call(cudart().cudaMemsetAsync(self.ptr, 0, self.nbytes, stream), "cudaMemsetAsync")

    def free(self) -> None:
        if self.ptr:
            cuda_call(cudart().cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class PinnedHostArray:
    """A numpy array in page-locked host memory, for asynchronous copies to and from the device."""

    def __init__(self, shape: tuple[int, ...], dtype: str):
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.ptr = int(cuda_call(cudart().cudaMallocHost(self.nbytes), "cudaMallocHost"))
        raw = (ctypes.c_byte * self.nbytes).from_address(self.ptr)
        self.array = np.ctypeslib.as_array(raw).view(dtype).reshape(shape)

    def copy_to_device_async(self, device: DeviceBuffer, stream: Any) -> None:
        runtime = cudart()
        cuda_call(runtime.cudaMemcpyAsync(device.ptr, self.ptr, self.nbytes,
                                          runtime.cudaMemcpyKind.cudaMemcpyHostToDevice, stream),
                  "cudaMemcpyAsync(host to device)")

    def copy_from_device_async(self, device: DeviceBuffer, stream: Any) -> None:
        runtime = cudart()
        cuda_call(runtime.cudaMemcpyAsync(self.ptr, device.ptr, self.nbytes,
                                          runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream),
                  "cudaMemcpyAsync(device to host)")

    def free(self) -> None:
        if self.ptr:
            cuda_call(cudart().cudaFreeHost(self.ptr), "cudaFreeHost")
            self.ptr = 0
