"""An exported ONNX file, read once and verified once: its bytes, its stored metadata, and the
sha256 of its graph (every initializer and node) checked against the one recorded at export.

``OnnxArtifact.open(path)`` reads the file, walks the top level of its protobuf (a few fields; the
graph itself is not parsed), reads ``metadata_props`` and hashes the graph's bytes. onnxruntime
builds its session from the same bytes (``runtime.onnx_session``); the export side parses them
into an ``onnx.ModelProto`` at most once (:attr:`OnnxArtifact.model_proto`). Torch-free, and
``onnx`` is imported only when the parsed graph is asked for.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from stae_deploy.runtime.artifact import ArtifactMetadata, require_artifact_file
from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.files import sniff_format

# The metadata key holding the sha256 of the serialized graph (ModelProto field 7). It is kept
# out of ArtifactMetadata: it describes this file, not the model, and an engine's sidecar has its
# own checksum of the engine.
KEY_GRAPH_SHA256 = "stae.graph_sha256"

# ModelProto field numbers (onnx.proto) and protobuf wire types used below.
_GRAPH_FIELD, _METADATA_FIELD = 7, 14
_ENTRY_KEY_FIELD, _ENTRY_VALUE_FIELD = 1, 2
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5
# Every serialized ModelProto begins with field 1 (ir_version, a varint): the byte 0x08.
ONNX_FIRST_BYTE = 0x08


class _Truncated(Exception):
    """The protobuf walk ran past the end of the bytes or met an unknown wire type."""


@dataclass(frozen=True, eq=False)
class OnnxArtifact:
    """path: where the file lives.  data: its bytes.  metadata: the stored, verified metadata.
    graph_sha256: hex sha256 of the serialized graph, equal to the one recorded at export.
    open_ms: wall time of reading and verifying the file (the checksum's cost is most of it)."""

    path: Path
    data: bytes
    metadata: ArtifactMetadata
    graph_sha256: str
    open_ms: float = 0.0

    @classmethod
    def open(cls, path: str | Path) -> "OnnxArtifact":
        """Read and verify ``path``; :class:`ArtifactError` names the file and what is wrong:
        missing, empty, foreign, truncated, not exported by stae-deploy, or damaged."""
        start = time.perf_counter()
        path = Path(path)
        require_artifact_file(path, "ONNX", "an ONNX model from `stae export`")
        data = path.read_bytes()
        try:
            if data[:1] != bytes([ONNX_FIRST_BYTE]):
                raise _Truncated
            fields = list(_top_level_fields(data))
        except _Truncated:
            raise ArtifactError(f"{path}: {_unreadable_reason(path, data)}") from None
        props = _metadata_props(data, fields, path)
        metadata = ArtifactMetadata.from_props(props, str(path))
        recorded = props.get(KEY_GRAPH_SHA256)
        if not recorded:
            raise ArtifactError(f"{path}: no graph checksum ('{KEY_GRAPH_SHA256}') in its "
                                f"metadata, so damage cannot be detected; export it again with "
                                f"this version of `stae export`")
        actual = graph_sha256(data, fields)
        if actual != recorded:
            raise ArtifactError(
                f"{path}: the file is damaged: its graph (weights and nodes) has sha256 "
                f"{actual[:16]}..., but {recorded[:16]}... was recorded when it was written; "
                f"copy or export it again")
        return cls(path, data, metadata, actual, (time.perf_counter() - start) * 1e3)

    @classmethod
    def from_written(cls, path: str | Path, data: bytes, model_proto: Any) -> "OnnxArtifact":
        """The artifact just written to ``path`` as ``data`` from ``model_proto`` (not re-read:
        the in-memory graph is the parsed one)."""
        fields = list(_top_level_fields(data))
        props = _metadata_props(data, fields, Path(path))
        artifact = cls(Path(path), data, ArtifactMetadata.from_props(props, str(path)),
                       props[KEY_GRAPH_SHA256])
        artifact.__dict__["model_proto"] = model_proto   # fills the cached_property below
        return artifact

    @property
    def spec(self):
        """The state protocol stored in the artifact (``metadata.spec``)."""
        return self.metadata.spec

    @cached_property
    def model_proto(self) -> Any:
        """The parsed ``onnx.ModelProto`` (parsed on first use, then kept)."""
        import onnx

        return onnx.load_model_from_string(self.data)


def graph_sha256(data: bytes, fields: list[tuple[int, int, int]] | None = None) -> str:
    """Hex sha256 of the serialized graph inside the ONNX bytes ``data`` (ModelProto field 7).

    fields: the top-level fields of ``data`` if already walked. The same bytes as
    ``sha256(model.graph.SerializeToString())`` of the parsed model.
    """
    digest = hashlib.sha256()
    view = memoryview(data)
    for number, start, end in fields if fields is not None else _top_level_fields(data):
        if number == _GRAPH_FIELD:
            digest.update(view[start:end])
    return digest.hexdigest()


def _top_level_fields(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(field number, payload start, payload end) of each top-level field of a protobuf."""
    position, size = 0, len(data)
    while position < size:
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _VARINT:
            start = position
            _, position = _varint(data, position)
        elif wire_type == _LENGTH_DELIMITED:
            length, start = _varint(data, position)
            position = start + length
        elif wire_type in (_FIXED64, _FIXED32):
            start = position
            position += 8 if wire_type == _FIXED64 else 4
        else:
            raise _Truncated
        if position > size or number == 0:
            raise _Truncated
        yield number, start, position


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data) or shift > 63:
            raise _Truncated
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _metadata_props(data: bytes, fields: list[tuple[int, int, int]], path: Path
                    ) -> dict[str, str]:
    """``metadata_props`` (ModelProto field 14: key/value string entries) as a dict."""
    props: dict[str, str] = {}
    for number, start, end in fields:
        if number != _METADATA_FIELD:
            continue
        entry = {1: "", 2: ""}
        try:
            for inner, inner_start, inner_end in _top_level_fields(data[start:end]):
                if inner in (_ENTRY_KEY_FIELD, _ENTRY_VALUE_FIELD):
                    entry[inner] = data[start + inner_start:start + inner_end].decode("utf-8")
        except (_Truncated, UnicodeDecodeError):
            raise ArtifactError(f"{path}: its metadata does not parse: truncated or corrupt; "
                                f"copy or export it again") from None
        props[entry[_ENTRY_KEY_FIELD]] = entry[_ENTRY_VALUE_FIELD]
    return props


def _unreadable_reason(path: Path, data: bytes) -> str:
    """Why ``data`` is not a readable ONNX model, in words: foreign, not ONNX, or truncated."""
    foreign = sniff_format(path)
    if foreign is not None:
        return (f"it looks like {foreign}, not an ONNX model (expected an ONNX model from "
                f"`stae export`)")
    if data[:1] != bytes([ONNX_FIRST_BYTE]):
        return (f"it is not an ONNX model (it begins with bytes {data[:8].hex(' ')}, an ONNX "
                f"model with {ONNX_FIRST_BYTE:02x}); expected an ONNX model from `stae export`")
    return (f"it begins like an ONNX model but does not parse ({len(data)} bytes): truncated or "
            f"corrupt; copy or export it again")
