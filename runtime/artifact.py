"""What every model artifact carries about itself, and the check that it tells the truth.

An exported ONNX graph stores :class:`ArtifactMetadata` in its ``metadata_props`` (and an engine
in its JSON sidecar): the state protocol, the model config, the precision, the checkpoint's
sha256 and the frame preprocessing. Loaders read it back with :meth:`ArtifactMetadata.from_props`
and compare the protocol with the graph's real inputs and outputs with :func:`check_graph_io`.
Torch-free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from stae_deploy.runtime.errors import ArtifactError, ProtocolError, SpecMismatchError
from stae_deploy.runtime.files import atomic_path
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec, TensorSpec
from stae_deploy.runtime.state_ranges import StateRanges

ARTIFACT_FORMAT_VERSION = 1
# What a model file's suffix says it is; the one place that decides (runtime, Triton, tests).
ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
PRECISIONS = ("fp32", "fp16", "int8")
# The model-frame convention (stae_deploy.runtime.frames): stored so a foreign loader can reproduce it.
DEFAULT_PREPROCESSING = {"color": "RGB", "range": [0.0, 1.0], "layout": "NCHW",
                         "dtype": "float32", "resize": "centre crop to aspect, area resize"}

KEY_FORMAT_VERSION = "stae.format_version"
KEY_PROTOCOL = "stae.protocol"
KEY_CONFIG = "stae.config"
KEY_PRECISION = "stae.precision"
KEY_CHECKPOINT_SHA256 = "stae.checkpoint_sha256"
KEY_PREPROCESSING = "stae.preprocessing"
KEY_NOTES = "stae.notes"
KEY_STATE_RANGES = "stae.state_ranges"


@dataclass(frozen=True)
class ArtifactMetadata:
    """The self-description stored in an artifact.

    spec:              the state protocol of the graph (names, shapes, dtypes, pairing).
    config:            the model config as a JSON object (``STAEConfig.to_dict()``).
    precision:         "fp32", "fp16" or "int8": how the graph computes.
    checkpoint_sha256: sha256 of the weights' checkpoint; None for seeded random weights.
    preprocessing:     how frames must be prepared (see ``stae_deploy.runtime.frames``).
    notes:             free-form provenance (e.g. the random-weight seed, precision options).
    state_ranges:      the ranges the state was seen to take (calibration or an export
                       rollout), read by the runtime's range guard; None: not recorded.
    """

    spec: IOSpec
    config: Mapping[str, Any]
    precision: str = "fp32"
    checkpoint_sha256: str | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_PREPROCESSING))
    notes: Mapping[str, Any] = field(default_factory=dict)
    state_ranges: StateRanges | None = None
    format_version: int = ARTIFACT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ArtifactError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.state_ranges is not None:
            self.state_ranges.check_names(self.spec)

    def to_props(self) -> dict[str, str]:
        """String key/value pairs for ONNX ``metadata_props`` or a sidecar."""
        return {
            KEY_FORMAT_VERSION: str(self.format_version),
            KEY_PROTOCOL: self.spec.to_json(),
            KEY_CONFIG: json.dumps(dict(self.config), sort_keys=True),
            KEY_PRECISION: self.precision,
            KEY_CHECKPOINT_SHA256: self.checkpoint_sha256 or "",
            KEY_PREPROCESSING: json.dumps(dict(self.preprocessing), sort_keys=True),
            KEY_NOTES: json.dumps(dict(self.notes), sort_keys=True),
            **({KEY_STATE_RANGES: self.state_ranges.to_json()} if self.state_ranges else {}),
        }

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str) -> "ArtifactMetadata":
        """Parse the pairs written by :meth:`to_props`; ``source`` names the file in errors."""
        missing = [k for k in (KEY_FORMAT_VERSION, KEY_PROTOCOL, KEY_CONFIG, KEY_PRECISION)
                   if k not in props]
        if missing:
            raise ArtifactError(
                f"{source}: metadata keys {missing} are missing; it was not exported by "
                f"stae-deploy (expected the state protocol and model config that `stae export` "
                f"stores; re-export it)")
        if props[KEY_FORMAT_VERSION] != str(ARTIFACT_FORMAT_VERSION):
            raise ArtifactError(
                f"{source}: artifact format version {props[KEY_FORMAT_VERSION]!r} is not "
                f"supported (expected {ARTIFACT_FORMAT_VERSION}); re-export it")
        try:
            spec = IOSpec.from_json(props[KEY_PROTOCOL])
        except ProtocolError as err:
            raise ArtifactError(f"{source}: metadata '{KEY_PROTOCOL}' is invalid: {err}") from None
        try:
            state_ranges = (StateRanges.from_json(props[KEY_STATE_RANGES])
                            if props.get(KEY_STATE_RANGES) else None)
            return cls(spec=spec, config=_json_object(props, KEY_CONFIG, source),
                       precision=props[KEY_PRECISION],
                       checkpoint_sha256=props.get(KEY_CHECKPOINT_SHA256) or None,
                       preprocessing=_json_object(props, KEY_PREPROCESSING, source,
                                                  DEFAULT_PREPROCESSING),
                       notes=_json_object(props, KEY_NOTES, source, {}),
                       state_ranges=state_ranges)
        except ProtocolError as err:
            raise ArtifactError(f"{source}: metadata '{KEY_STATE_RANGES}' is invalid: "
                                f"{err}") from None


def require_artifact_file(path: Path, kind: str, expected: str) -> None:
    """Raise :class:`ArtifactError` naming ``path`` unless it is a non-empty regular file.

    kind: what the file is ("ONNX", "engine"); expected: what it should be, for the messages.
    """
    if path.is_dir():
        raise ArtifactError(f"{path}: is a directory; expected {expected}")
    if not path.is_file():
        raise ArtifactError(f"{path}: no such {kind} file")
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path}: is empty (0 bytes); expected {expected}")


def engine_sidecar_path(engine: str | Path) -> Path:
    """Where an engine's JSON sidecar lives: ``stae.engine`` -> ``stae.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write_engine_sidecar(engine: str | Path, metadata: ArtifactMetadata,
                         build: Mapping[str, Any]) -> Path:
    """Write the engine's sidecar: the artifact metadata plus how it was built (``build``)."""
    path = engine_sidecar_path(engine)
    with atomic_path(path) as partial:
        partial.write_text(json.dumps({"metadata": metadata.to_props(), "build": dict(build)},
                                      indent=2, sort_keys=True))
    return path


def read_engine_sidecar(engine: str | Path) -> tuple[ArtifactMetadata, dict[str, Any]]:
    """(metadata, build info) from an engine's sidecar; :class:`ArtifactError` if unusable."""
    path = engine_sidecar_path(engine)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{engine}: its sidecar {path} is missing; rebuild the engine with "
                            f"`stae build` (the sidecar holds the state protocol)") from None
    except OSError as err:
        raise ArtifactError(f"{path}: unreadable engine sidecar: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: the sidecar of {Path(engine).name} is not valid JSON "
                            f"({err}); expected the JSON `stae build` writes: rebuild the "
                            f"engine") from None
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), dict):
        raise ArtifactError(f"{path}: not a stae-deploy engine sidecar (expected a JSON object "
                            f"with 'metadata' and 'build', as `stae build` writes)")
    return ArtifactMetadata.from_props(data["metadata"], str(path)), dict(data.get("build", {}))


def check_graph_io(spec: IOSpec, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                   source: str) -> None:
    """Raise :class:`SpecMismatchError` unless the graph's real I/O is exactly the protocol's.

    Every difference is listed, each naming its tensor: missing, unexpected, wrong shape or dtype.
    """
    problems: list[str] = []
    for kind, declared, actual in (("input", spec.inputs, inputs), ("output", spec.outputs, outputs)):
        actual_by_name = {t.name: t for t in actual}
        declared_names = {t.name for t in declared}
        for tensor in declared:
            real = actual_by_name.get(tensor.name)
            if real is None:
                problems.append(f"{kind} '{tensor.name}' is in the protocol but not in the graph")
                continue
            if real.shape != tensor.shape:
                problems.append(f"{kind} '{tensor.name}': graph shape {_fmt(real.shape)}, "
                                f"protocol {_fmt(tensor.shape)}")
            if real.dtype != tensor.dtype:
                problems.append(f"{kind} '{tensor.name}': graph dtype {real.dtype}, "
                                f"protocol {tensor.dtype}")
        for name in actual_by_name.keys() - declared_names:
            problems.append(f"{kind} '{name}' is in the graph but not in the protocol")
    if problems:   # one line: the CLI prints a user error as a single line
        raise SpecMismatchError(f"{source}: the stored state protocol does not match the graph: "
                                + "; ".join(problems))


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) if d != DYNAMIC_BATCH else "batch" for d in shape) + ")"


def _json_object(props: Mapping[str, str], key: str, source: str,
                 default: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if key not in props and default is not None:
        return dict(default)
    try:
        value = json.loads(props[key])
    except (KeyError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{source}: metadata '{key}' is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{source}: metadata '{key}' must be a JSON object")
    return value
