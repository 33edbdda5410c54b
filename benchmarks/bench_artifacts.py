"""The files `stae bench` times, built in a work folder with the project's own tools.

``eager``: the model saved as a checkpoint (so a fresh process can load it); ``plain`` and
``fast``: :func:`stae_deploy.export.to_onnx.export_onnx` graphs; ``fp16``: :func:`stae_deploy.calibration.fp16.convert_fp16`
of the fast graph; ``int8``: the fast graph quantised for onnxruntime after a short calibration
on city (the row is about speed, not accuracy). A build that fails for a reason a user can meet
(a missing tool, a graph a tool refuses) leaves that reason instead of a path and the others go
on; a file already in the work folder stops the run unless ``force``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from stae_deploy.calibration.calib_data import save_calibration
from stae_deploy.calibration.quantize import quantize_model
from stae_deploy.calibration.record import calibration_streams, record_calibration
from stae_deploy.calibration.fp16 import convert_fp16
from stae_deploy.export.to_onnx import ExportSettings, export_onnx
from stae_deploy.runtime.errors import ArtifactError, OutputExistsError, StaeError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.stae_ref.checkpoint import save_checkpoint
from stae_deploy.stae_ref.model import STAE

CALIBRATION_CLIP = "city"
CALIBRATION_STEPS = 24
CALIBRATION_EVERY = 3
# The artifacts that others are made from.
SOURCES = {"fp16": "fast", "int8": "fast"}


def build_artifacts(model: STAE, provenance: dict[str, Any], folder: Path, keys: Iterable[str],
                    dynamic_batch: bool, force: bool) -> tuple[dict[str, Path], dict[str, str]]:
    """Build the artifacts of backends ``keys`` at the model's frame size in ``folder``.

    dynamic_batch: export with a symbolic batch axis (needed for batch > 1). force: overwrite
    files already in ``folder``. Returns (key -> path, key -> why it could not be built); an
    artifact that others are made from is built even if not asked for.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    failures: dict[str, str] = {}

    def source(key: str) -> Path:
        needed = SOURCES[key]
        if needed not in paths:
            raise ArtifactError(f"needs the {needed} graph, which was not built "
                                f"({failures[needed]})")
        return paths[needed]

    def exported(graph: str) -> Callable[[Path], object]:
        settings = ExportSettings(dynamic_batch=dynamic_batch, graph=graph)
        return lambda path: export_onnx(model, path, provenance, settings, force=force)

    builders: dict[str, tuple[str, Callable[[Path], object]]] = {
        "eager": ("model.pt", lambda path: save_checkpoint(model, path, force=force)),
        "plain": ("stae.plain.onnx", exported("plain")),
        "fast": ("stae.fast.onnx", exported("fast")),
        "fp16": ("stae.fast.fp16.onnx",
                 lambda path: convert_fp16(source("fp16"), path, force=force)),
        "int8": ("stae.fast.int8.onnx",
                 lambda path: _quantize_for_onnxruntime(source("int8"), path,
                                                        model.config.frame_size, force)),
    }
    wanted = set(keys) | {SOURCES[key] for key in keys if key in SOURCES}
    for key, (name, build) in builders.items():
        if key in wanted:
            try:
                build(folder / name)
                paths[key] = folder / name
            except OutputExistsError:
                raise
            except (ImportError, StaeError) as err:
                failures[key] = f"{type(err).__name__}: {err}"
    return paths, failures


def _quantize_for_onnxruntime(source: Path, output: Path, frame_size: tuple[int, int],
                              force: bool) -> None:
    """Calibrate ``source`` (frames of ``frame_size``, (H, W) pixels) on a short stretch of
    city, then write its onnxruntime INT8 graph to ``output``."""
    calib = refuse_overwrite(output.with_suffix(".calib.npz"), force)
    streams = calibration_streams(frame_size, (CALIBRATION_CLIP,), (), CALIBRATION_STEPS)
    tensors, info = record_calibration(source, streams, warmup=0, every=CALIBRATION_EVERY,
                                       progress=False)
    save_calibration(calib, tensors, info)
    quantize_model(source, calib, output, target="onnxruntime", force=force)
