"""CUDA through cuda-python (``cuda.bindings``, what NVIDIA's TensorRT samples use), with every
call routed through :func:`cuda_call`, so a failure names the call and the CUDA error."""
from __future__ import annotations

import ctypes
import importlib
from typing import Any

import numpy as np

from stae_deploy.runtime.errors import CudaError


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


def copy_device_to_device(target_ptr: int, source_ptr: int, nbytes: int, stream: Any = 0) -> None:
    """Copy ``nbytes`` between two device addresses, ordered on ``stream`` (0: the legacy
    default stream, which waits for blocking streams; pass the backend's stream otherwise)."""
    runtime = cudart()
    cuda_call(runtime.cudaMemcpyAsync(target_ptr, source_ptr, nbytes,
                                      runtime.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream),
              "cudaMemcpyAsync(device to device)")
    cuda_call(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def zero_device(ptr: int, nbytes: int, stream: Any = 0) -> None:
    """Fill ``nbytes`` at device address ``ptr`` with zeros and wait for it."""
    runtime = cudart()
    cuda_call(runtime.cudaMemsetAsync(ptr, 0, nbytes, stream), "cudaMemsetAsync")
    cuda_call(runtime.cudaStreamSynchronize(stream), "cudaStreamSynchronize")


def copy_host_to_device(target_ptr: int, array: np.ndarray) -> None:
    """Copy a host array's bytes to device address ``target_ptr`` (synchronous)."""
    runtime = cudart()
    host = np.ascontiguousarray(array)
    cuda_call(runtime.cudaMemcpy(target_ptr, host.ctypes.data, host.nbytes,
                                 runtime.cudaMemcpyKind.cudaMemcpyHostToDevice),
              "cudaMemcpy(host to device)")


def copy_device_to_host(array: np.ndarray, source_ptr: int) -> None:
    """Fill the contiguous host ``array`` from device address ``source_ptr`` (synchronous)."""
    runtime = cudart()
    cuda_call(runtime.cudaMemcpy(array.ctypes.data, source_ptr, array.nbytes,
                                 runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost),
              "cudaMemcpy(device to host)")
