"""Reading and writing ONNX files as stae-deploy artifacts: load with clear errors, the graph's
real I/O as protocol tensors, the metadata stored in ``metadata_props``, and saving with the
graph's sha256 recorded (``runtime/onnx_artifact.py`` verifies it at every load)."""
from __future__ import annotations

from pathlib import Path

import hashlib

import onnx
from google.protobuf.message import DecodeError

from stae_deploy.runtime.artifact import KEY_STATE_RANGES, ArtifactMetadata, check_graph_io
from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.files import atomic_path
from stae_deploy.runtime.onnx_artifact import KEY_GRAPH_SHA256, OnnxArtifact
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, TensorSpec

# ONNX element type -> protocol dtype name.
ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load any ONNX file (e.g. torch's raw export), raising :class:`ArtifactError` naming it if
    missing or unreadable. A stae-deploy artifact is opened with :func:`open_graph` instead."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{path}: not a readable ONNX model (truncated or foreign file?): "
                            f"{type(err).__name__}: {err}") from None


def graph_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's inputs and outputs as protocol tensors (a symbolic axis 0 reads ``"batch"``)."""

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else DYNAMIC_BATCH
                for d in tensor_type.shape.dim]
        dtype = ONNX_DTYPES.get(tensor_type.elem_type)
        if dtype is None:
            raise ArtifactError(f"graph tensor '{value.name}' has unsupported element type "
                                f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}")
        return TensorSpec(value.name, tuple(dims), dtype)

    initializers = {i.name for i in model.graph.initializer}
    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in model.graph.output]


def read_metadata(model: onnx.ModelProto, source: str) -> ArtifactMetadata:
    """The artifact metadata stored in ``metadata_props`` (an :class:`ArtifactError` if absent)."""
    return ArtifactMetadata.from_props({p.key: p.value for p in model.metadata_props}, source)


def write_metadata(model: onnx.ModelProto, metadata: ArtifactMetadata) -> None:
    """Store ``metadata`` in ``metadata_props``, replacing earlier stae entries (state ranges
    the new metadata does not have are dropped), keeping others."""
    props = metadata.to_props()
    if KEY_STATE_RANGES not in props:
        kept = [(p.key, p.value) for p in model.metadata_props if p.key != KEY_STATE_RANGES]
        del model.metadata_props[:]
        for key, value in kept:
            model.metadata_props.add(key=key, value=value)
    _set_props(model, props)


def _set_props(model: onnx.ModelProto, props: dict[str, str]) -> None:
    """Set ``props`` in ``metadata_props``, replacing entries of the same keys, keeping others."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def verified_metadata(model: onnx.ModelProto, source: str) -> ArtifactMetadata:
    """Read the metadata and check that its protocol is exactly the graph's real I/O."""
    metadata = read_metadata(model, source)
    inputs, outputs = graph_io(model)
    check_graph_io(metadata.spec, inputs, outputs, source)
    return metadata


def open_graph(source: str | Path | OnnxArtifact) -> tuple[onnx.ModelProto, ArtifactMetadata]:
    """(parsed graph, metadata) of an artifact, its protocol checked against the graph's real
    I/O; ``source`` is a path (read and verified by :meth:`OnnxArtifact.open`) or an artifact
    already open (parsed at most once)."""
    artifact = source if isinstance(source, OnnxArtifact) else OnnxArtifact.open(source)
    model = artifact.model_proto
    return model, verified_metadata(model, str(artifact.path))


def save_model(model: onnx.ModelProto, path: str | Path) -> OnnxArtifact:
    """Write ``model`` to ``path`` atomically (a partial file never has the final name), with the
    sha256 of its graph in the metadata; returns the written artifact (not read back)."""
    path = Path(path)
    _set_props(model, {KEY_GRAPH_SHA256: hashlib.sha256(model.graph.SerializeToString()).hexdigest()})
    data = model.SerializeToString()
    with atomic_path(path) as partial:
        partial.write_bytes(data)
    return OnnxArtifact.from_written(path, data, model)
