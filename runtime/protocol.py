"""The state protocol: every graph input and output, its shape and dtype, and the explicit pairing
of each recurrent-state input with the output that becomes it at the next step.

Defined once here (torch-free), built for a model by ``stae_deploy.stae_ref.state_spec.io_spec(config)``,
written into every artifact, and read back from it by the exporter, runtime, calibration and
tests. Nothing else re-types a state name or shape.

Conventions:
* axis 0 of every tensor is the batch axis; it is an ``int`` (static) or the string ``"batch"``
  (dynamic batch);
* state inputs are paired with state outputs by an explicit table (:class:`StatePair`), never by
  name pattern or position.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Mapping, Union

import numpy as np

from stae_deploy.runtime.errors import FrameFormatError, ProtocolError

PROTOCOL_FORMAT_VERSION = 1
DYNAMIC_BATCH = "batch"
SUPPORTED_DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64", "bool")

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: ``shape`` is batch-first; ``shape[0]`` is an int or ``"batch"``."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ProtocolError(f"tensor name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "shape", tuple(self.shape))
        if not self.shape:
            raise ProtocolError(f"tensor '{self.name}': shape must have a batch axis, got ()")
        batch, *rest = self.shape
        if not (batch == DYNAMIC_BATCH or _is_positive_int(batch)):
            raise ProtocolError(
                f"tensor '{self.name}': axis 0 (batch) must be a positive int or "
                f"'{DYNAMIC_BATCH}', got {batch!r}")
        for axis, dim in enumerate(rest, start=1):
            if not _is_positive_int(dim):
                raise ProtocolError(
                    f"tensor '{self.name}': axis {axis} must be a positive int, got {dim!r}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise ProtocolError(
                f"tensor '{self.name}': dtype {self.dtype!r} is not one of {SUPPORTED_DTYPES}")

    @property
    def per_sample_shape(self) -> tuple[int, ...]:
        """The shape without the batch axis."""
        return tuple(int(d) for d in self.shape[1:])

    @property
    def sample_nbytes(self) -> int:
        """Bytes of one sample (one batch row) of this tensor."""
        return int(np.prod(self.per_sample_shape)) * np.dtype(self.dtype).itemsize

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        """The shape with the batch axis set to ``batch`` (must agree with a static batch)."""
        if self.shape[0] != DYNAMIC_BATCH and self.shape[0] != batch:
            raise FrameFormatError(
                f"tensor '{self.name}': batch {batch} requested but the protocol fixes it at "
                f"{self.shape[0]} (export with --dynamic-batch for other batch sizes)")
        return (batch, *self.per_sample_shape)

    def with_batch(self, batch: Dim) -> "TensorSpec":
        """A copy whose batch axis is ``batch`` (an int or ``"batch"``)."""
        return replace(self, shape=(batch, *self.per_sample_shape))

    def check_array(self, array: Any) -> None:
        """Raise :class:`FrameFormatError` naming this tensor unless ``array`` matches it.

        Works for numpy arrays and anything with ``.shape`` and ``.dtype`` (e.g. torch tensors).
        """
        shape = tuple(int(d) for d in getattr(array, "shape", ()))
        dtype = str(getattr(array, "dtype", type(array).__name__)).removeprefix("torch.")
        expected = ("N" if self.shape[0] == DYNAMIC_BATCH else self.shape[0],
                    *self.per_sample_shape)
        batch_ok = len(shape) > 0 and (self.shape[0] == DYNAMIC_BATCH or shape[0] == self.shape[0])
        if len(shape) != len(self.shape) or not batch_ok or shape[1:] != self.per_sample_shape:
            raise FrameFormatError(
                f"tensor '{self.name}': got shape {shape}, expected {expected} "
                f"(batch-first, from the state protocol)")
        if dtype != self.dtype:
            raise FrameFormatError(
                f"tensor '{self.name}': got dtype {dtype}, expected {self.dtype}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TensorSpec":
        _require_keys(data, ("name", "shape", "dtype"), "tensor spec")
        return cls(name=data["name"], shape=tuple(data["shape"]), dtype=data["dtype"])


@dataclass(frozen=True)
class StatePair:
    """A recurrent state: ``input`` is read at step t, ``output`` is fed to ``input`` at t+1.
    ``unbounded``: the cell does not bound its values (an LSTM memory can grow by about 1 per
    step on a long stream); INT8 keeps the convolutions it feeds in float."""

    input: TensorSpec
    output: TensorSpec
    unbounded: bool = False

    def __post_init__(self) -> None:
        if self.input.name == self.output.name:
            raise ProtocolError(
                f"state '{self.input.name}': input and output must have distinct names "
                f"(one buffer must never be bound as both)")
        if self.input.shape != self.output.shape or self.input.dtype != self.output.dtype:
            raise ProtocolError(
                f"state '{self.input.name}' -> '{self.output.name}': input is "
                f"{list(self.input.shape)} {self.input.dtype} but output is "
                f"{list(self.output.shape)} {self.output.dtype}; a state must keep its shape")

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input.to_dict(), "output": self.output.to_dict(),
                "unbounded": self.unbounded}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StatePair":
        _require_keys(data, ("input", "output"), "state pair")
        state_input = TensorSpec.from_dict(data["input"])
        unbounded = data.get("unbounded", False)       # absent in artifacts written before it
        if not isinstance(unbounded, bool):
            raise ProtocolError(f"state '{state_input.name}': 'unbounded' must be true or false, "
                                f"got {unbounded!r}")
        return cls(state_input, TensorSpec.from_dict(data["output"]), unbounded)


@dataclass(frozen=True)
class IOSpec:
    """All inputs and outputs of one model step.

    ``data_inputs`` (e.g. the frame) and ``data_outputs`` (e.g. the prediction) flow in and out
    once; ``state`` lists the recurrent tensors, each output fed back into its paired input.
    """

    data_inputs: tuple[TensorSpec, ...]
    data_outputs: tuple[TensorSpec, ...]
    state: tuple[StatePair, ...]
    version: int = PROTOCOL_FORMAT_VERSION

    def __post_init__(self) -> None:
        for field in ("data_inputs", "data_outputs", "state"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
        if self.version != PROTOCOL_FORMAT_VERSION:
            raise ProtocolError(
                f"state protocol version {self.version} is not supported "
                f"(this toolkit reads version {PROTOCOL_FORMAT_VERSION})")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ProtocolError(f"tensor names must be unique; repeated: {duplicates}")
        if not self.data_inputs or not self.data_outputs:
            raise ProtocolError("a state protocol needs a frame input and a prediction output; "
                                f"got data_inputs {[t.name for t in self.data_inputs]}, "
                                f"data_outputs {[t.name for t in self.data_outputs]}")
        if len(self.data_inputs[0].shape) != 4:
            raise ProtocolError(f"frame input '{self.data_inputs[0].name}': expected shape "
                                f"(batch, 3, H, W), got {list(self.data_inputs[0].shape)}")
        batches = {t.shape[0] for t in (*self.inputs, *self.outputs)}
        if len(batches) > 1:
            raise ProtocolError(f"all tensors must share one batch axis, got {sorted(map(str, batches))}")

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """Every graph input, data first, then state inputs in protocol order."""
        return (*self.data_inputs, *(p.input for p in self.state))

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Every graph output, data first, then state outputs in protocol order."""
        return (*self.data_outputs, *(p.output for p in self.state))

    @property
    def frame(self) -> TensorSpec:
        """The frame input: (batch, 3, H, W), the first data input."""
        return self.data_inputs[0]

    @property
    def prediction(self) -> TensorSpec:
        """The prediction output: the first data output, frames batch-first like the input."""
        return self.data_outputs[0]

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the frames the model takes."""
        height, width = self.frame.per_sample_shape[-2:]
        return height, width

    @property
    def batch(self) -> Dim:
        """The batch axis shared by all tensors: an int, or ``"batch"`` when dynamic."""
        return self.inputs[0].shape[0]

    def tensor(self, name: str) -> TensorSpec:
        """The spec of the input or output called ``name``."""
        for spec in (*self.inputs, *self.outputs):
            if spec.name == name:
                return spec
        raise ProtocolError(
            f"no tensor '{name}' in the state protocol; it has inputs "
            f"{[t.name for t in self.inputs]} and outputs {[t.name for t in self.outputs]}")

    def with_batch(self, batch: Dim) -> "IOSpec":
        """A copy with every batch axis set to ``batch`` (an int or ``"batch"``)."""
        return IOSpec(
            data_inputs=tuple(t.with_batch(batch) for t in self.data_inputs),
            data_outputs=tuple(t.with_batch(batch) for t in self.data_outputs),
            state=tuple(replace(p, input=p.input.with_batch(batch),
                                output=p.output.with_batch(batch))
                        for p in self.state),
            version=self.version)

    def with_dtype(self, dtype: str) -> "IOSpec":
        """A copy with every tensor's dtype set to ``dtype`` (e.g. an all-float16 graph)."""
        def retyped(t: TensorSpec) -> TensorSpec:
            return replace(t, dtype=dtype)

        return IOSpec(
            data_inputs=tuple(map(retyped, self.data_inputs)),
            data_outputs=tuple(map(retyped, self.data_outputs)),
            state=tuple(replace(p, input=retyped(p.input), output=retyped(p.output))
                        for p in self.state),
            version=self.version)

    def zero_state(self, batch: int | None = None) -> dict[str, np.ndarray]:
        """Zero-filled state, keyed by state *input* name; ``batch`` defaults to the static one."""
        if batch is None:
            if self.batch == DYNAMIC_BATCH:
                raise ProtocolError("zero_state: this protocol has a dynamic batch; pass batch=")
            batch = int(self.batch)
        return {p.input.name: np.zeros(p.input.concrete_shape(batch), dtype=p.input.dtype)
                for p in self.state}

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "data_inputs": [t.to_dict() for t in self.data_inputs],
            "data_outputs": [t.to_dict() for t in self.data_outputs],
            "state": [p.to_dict() for p in self.state],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IOSpec":
        _require_keys(data, ("version", "data_inputs", "data_outputs", "state"), "state protocol")
        return cls(
            data_inputs=tuple(TensorSpec.from_dict(t) for t in data["data_inputs"]),
            data_outputs=tuple(TensorSpec.from_dict(t) for t in data["data_outputs"]),
            state=tuple(StatePair.from_dict(p) for p in data["state"]),
            version=data["version"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "IOSpec":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ProtocolError(f"state protocol is not valid JSON: {err}") from None
        return cls.from_dict(data)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _require_keys(data: Mapping[str, Any], keys: tuple[str, ...], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{what} must be a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise ProtocolError(f"{what} is missing keys {missing}")
