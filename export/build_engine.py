"""Build a TensorRT engine from a precision-carrying ONNX graph (TensorRT 10 Python API).

    python export/build_engine.py MODEL.onnx -o stae.engine [--max-batch 8] [--timing-cache F]
    stae build ...             (the same)

Strongly typed: the graph's own Cast and Q/DQ nodes decide precision, which is how TensorRT 11
(no FP16/INT8 builder flags, no calibrators) and TensorRT 10.12+ want it. Writes the engine and a
JSON sidecar (protocol, source ONNX sha256, TensorRT version, build options), and prints the
equivalent ``trtexec`` line. Without TensorRT it fails with one clear sentence.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stae_deploy.export.onnx_graph import open_graph
from stae_deploy.runtime.artifact import write_engine_sidecar
from stae_deploy.runtime.backends.tensorrt_backend import require_tensorrt
from stae_deploy.runtime.errors import ConfigError, EngineBuildError
from stae_deploy.runtime.files import refuse_overwrite, sha256_file
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec
from stae_deploy.stae_ref.config import check_known_fields


@dataclass(frozen=True)
class BuildConfig:
    """How to build. workspace_mib: TensorRT's scratch memory limit. opt_batch/max_batch: the
    optimisation profile of a dynamic-batch graph (min is 1; ignored for a static graph).
    timing_cache: file reused and updated across builds (None: no cache)."""

    workspace_mib: int = 4096
    opt_batch: int = 1
    max_batch: int = 8
    timing_cache: str | None = None

    def __post_init__(self) -> None:
        if self.workspace_mib < 1:
            raise ConfigError(f"workspace_mib: expected >= 1, got {self.workspace_mib}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"opt_batch/max_batch: need 1 <= opt_batch <= max_batch, got "
                              f"{self.opt_batch} and {self.max_batch}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildConfig":
        check_known_fields(cls, data, "build config")
        return cls(**data)


def profile_shapes(spec: IOSpec, config: BuildConfig) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Input name -> (min, opt, max) shapes of the dynamic-batch profile ({} if static)."""
    if spec.batch != DYNAMIC_BATCH:
        return {}
    return {t.name: tuple((b, *t.per_sample_shape) for b in (1, config.opt_batch, config.max_batch))
            for t in spec.inputs}


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, spec: IOSpec,
                    config: BuildConfig) -> str:
    """The trtexec line that builds the same engine."""
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped",
             f"--memPoolSize=workspace:{config.workspace_mib}M"]
    shapes = profile_shapes(spec, config)
    for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
        if shapes:
            parts.append(flag + "=" + ",".join(
                f"{name}:{'x'.join(map(str, dims[index]))}" for name, dims in shapes.items()))
    if config.timing_cache:
        parts.append(f"--timingCacheFile={config.timing_cache}")
    return " ".join(parts)


def artifact_trtexec_command(onnx_path: str | Path, engine_path: str | Path,
                             config: BuildConfig) -> str:
    """The trtexec line that builds ``engine_path`` from the exported artifact ``onnx_path`` (its
    protocol gives the dynamic-batch profile); needs no TensorRT."""
    metadata = open_graph(onnx_path)[1]
    return trtexec_command(onnx_path, engine_path, metadata.spec, config)


def build_engine(onnx_path: str | Path, engine_path: str | Path, config: BuildConfig,
                 force: bool = False) -> Path:
    """Build ``engine_path`` (+ sidecar) from ``onnx_path``; returns the engine path."""
    engine_path = refuse_overwrite(engine_path, force)
    metadata = open_graph(onnx_path)[1]
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    build_config = builder.create_builder_config()
    build_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    shapes = profile_shapes(metadata.spec, config)
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in shapes.items():
            profile.set_shape(name, trt.Dims(list(low)), trt.Dims(list(opt)), trt.Dims(list(high)))
        build_config.add_optimization_profile(profile)
    cache_path = Path(config.timing_cache) if config.timing_cache else None
    if cache_path is not None:
        cache_bytes = cache_path.read_bytes() if cache_path.exists() else b""
        build_config.set_timing_cache(build_config.create_timing_cache(cache_bytes), False)
    plan = builder.build_serialized_network(network, build_config)
    if plan is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build an engine (see its log)")
    partial = engine_path.with_name(engine_path.name + ".partial")
    partial.write_bytes(bytes(plan))
    partial.replace(engine_path)
    if cache_path is not None:
        cache_path.write_bytes(bytes(build_config.get_timing_cache().serialize()))
    write_engine_sidecar(engine_path, metadata, {
        "source_onnx": str(onnx_path), "source_onnx_sha256": sha256_file(onnx_path),
        "engine_sha256": sha256_file(engine_path), "tensorrt_version": trt.__version__,
        "build_config": config.to_dict()})
    return engine_path


if __name__ == "__main__":      # python export/build_engine.py ... is `stae build ...`
    from stae_deploy.cli.main import main

    sys.exit(main(["build", *sys.argv[1:]]))
