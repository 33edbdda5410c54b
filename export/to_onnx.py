"""Export one STAE time step to ONNX with its recurrent state as explicit inputs and outputs.

    python export/to_onnx.py --checkpoint CKPT --output stae.onnx [--frame-size N]
                             [--dynamic-batch] [--opset 20] [--graph fast|plain] [--force]
    stae export ...            (the same)

Graph I/O is named from the state protocol, batch on axis 0, no Loop/Scan/If, every kernel an
initializer. Two formulations of the same step, with the same weights and I/O (``GRAPHS``):
``fast`` (default) runs every Conv3d as a Conv2d over time-stacked channels
(``stae_deploy.export.time_stacked``); ``plain`` is the reference's own module tree, op for op. ``metadata_props`` carry the protocol, config, precision, checkpoint sha256 and
preprocessing (``stae_deploy.runtime.artifact``). The graph checks (``stae check``) run after every export.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import onnx
import torch

from stae_deploy.export.graph_rewrites import optimize_graph
from stae_deploy.export.onnx_graph import graph_io, load_model, save_model, write_metadata
from stae_deploy.runtime.artifact import ArtifactMetadata, check_graph_io
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.protocol import DYNAMIC_BATCH
from stae_deploy.export.time_stacked import TimeStackedSTAE
from stae_deploy.stae_ref.model import STAE

DEFAULT_OPSET = 20


@dataclass(frozen=True)
class GraphFormulation:
    """One way to write the step as a graph: the module the exporter traces (STAE's export
    signature) and the exact ONNX rewrites applied afterwards (name -> places changed)."""

    module: Callable[[STAE], torch.nn.Module]
    rewrite: Callable[[onnx.ModelProto], dict[str, int]] | None = None


GRAPHS = {
    "fast": GraphFormulation(TimeStackedSTAE, optimize_graph),
    "plain": GraphFormulation(lambda model: model),
}
DEFAULT_GRAPH = "fast"
# TensorRT parses its normalisation layer from opset 17 on.
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportSettings:
    """How :func:`export_onnx` writes the graph: the ONNX ``opset`` (>= 17), a symbolic batch
    axis on every tensor (``dynamic_batch``, needed for batch > 1) and the formulation
    (``graph``, a key of ``GRAPHS``: "fast", time-stacked Conv2d plus ``export/graph_rewrites.py``,
    or "plain", the reference's ops)."""

    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    graph: str = DEFAULT_GRAPH

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ConfigError(f"graph: expected one of {sorted(GRAPHS)}, got {self.graph!r}")
        if self.opset < MIN_OPSET:
            raise ConfigError(f"opset: TensorRT needs opset >= {MIN_OPSET} for its normalisation "
                              f"layer, got {self.opset}")


def export_onnx(model: STAE, output: str | Path, provenance: dict[str, Any],
                settings: ExportSettings = ExportSettings(), *, force: bool = False
                ) -> OnnxArtifact:
    """Export ``model`` at its config's frame size to ``output``; returns the written artifact
    (its metadata, bytes and parsed graph, so the checks need not read the file again).

    provenance: where the weights came from (``stae_ref/model_source.py``'s ``load_model``);
    stored in the metadata with ``settings.graph`` (and the graph rewrites) so ``stae check`` can
    rebuild the exact reference. Refuses to overwrite ``output`` unless ``force``.
    """
    output = refuse_overwrite(output, force)
    graph, dynamic_batch = settings.graph, settings.dynamic_batch
    model = model.eval()
    formulation = GRAPHS[graph]
    traced = formulation.module(model).eval()
    spec = model.spec().with_batch(DYNAMIC_BATCH) if dynamic_batch else model.spec()
    # torch.export specialises a dimension of size 1, so a dynamic batch is traced with batch 2.
    example_batch = 2 if dynamic_batch else 1
    generator = torch.Generator().manual_seed(0)
    frame = torch.rand(spec.frame.concrete_shape(example_batch), generator=generator)
    state = model.zero_state(example_batch)
    example = (frame, *(state[p.input.name] for p in spec.state))
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        # forward(frame, *state): torch.export sees two arguments, the frame and the state tuple.
        dynamic_shapes = ({0: batch}, tuple({0: batch} for _ in spec.state))
    # torch's exporter logs one line per torchvision op it cannot register; none are used here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # torch prints its progress on stdout; keep stdout for reports (e.g. --json).
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings(), \
            contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*axis name: batch will not be used")
        raw_path = Path(scratch) / "raw.onnx"
        torch.onnx.export(traced, example, str(raw_path), dynamo=True, opset_version=settings.opset,
                          input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs],
                          dynamic_shapes=dynamic_shapes, external_data=False)
        onnx_model = load_model(raw_path)
    notes = {**{k: v for k, v in provenance.items() if k != "checkpoint_sha256"}, "graph": graph}
    if formulation.rewrite is not None:
        notes["graph_rewrites"] = formulation.rewrite(onnx_model)
    metadata = ArtifactMetadata(
        spec=spec, config=model.config.to_dict(), precision="fp32",
        checkpoint_sha256=provenance.get("checkpoint_sha256"), notes=notes)
    write_metadata(onnx_model, metadata)
    inputs, outputs = graph_io(onnx_model)
    check_graph_io(spec, inputs, outputs, f"{output} (just exported)")
    return save_model(onnx_model, output)


if __name__ == "__main__":      # python export/to_onnx.py ... is `stae export ...`
    from stae_deploy.cli.main import main

    sys.exit(main(["export", *sys.argv[1:]]))
