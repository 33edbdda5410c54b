"""Polygraphy interop: one-step inputs and reference outputs in Polygraphy's JSON formats.

A user with TensorRT compares an engine against the PyTorch reference without this toolkit:

    polygraphy run stae.onnx --trt --load-inputs DIR/inputs.json --load-outputs DIR/reference.json

Each saved iteration is one teacher-forced step, fed the *reference's* state, so Polygraphy's
comparator (which cannot chain state between iterations) checks one step at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.stae_ref.model import STAE

REFERENCE_RUNNER = "stae-pytorch-reference"


@torch.no_grad()
def save_polygraphy_data(spec: IOSpec, reference: STAE, frames: np.ndarray, steps: int,
                         directory: str | Path) -> tuple[Path, Path]:
    """Write ``inputs.json`` and ``reference.json`` for ``steps`` steps over ``frames``.

    Tensors are stored in the graph's dtypes (from ``spec``). Returns the two paths.
    """
    from polygraphy.comparator import RunResults
    from polygraphy.json import save_json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtypes = {t.name: t.dtype for t in (*spec.inputs, *spec.outputs)}
    frame_name, prediction_name = spec.frame.name, spec.prediction.name
    state = reference.zero_state()
    feeds, outputs = [], []
    for t in range(steps):
        frame = torch.from_numpy(frames[t][None])
        prediction, next_state = reference.step(frame, state)
        feed = {frame_name: frame, **state}
        out = {prediction_name: prediction,
               **{p.output.name: next_state[p.input.name] for p in spec.state}}
        feeds.append({k: v.numpy().astype(dtypes[k]) for k, v in feed.items()})
        outputs.append({k: v.numpy().astype(dtypes[k]) for k, v in out.items()})
        state = next_state
    inputs_path, outputs_path = directory / "inputs.json", directory / "reference.json"
    save_json(feeds, str(inputs_path), description="stae one-step inputs")
    results = RunResults()
    results.add(outputs, runner_name=REFERENCE_RUNNER)
    results.save(str(outputs_path))
    return inputs_path, outputs_path


def polygraphy_command(model: str | Path, inputs: Path, outputs: Path, backend: str,
                       atol: float, rtol: float) -> str:
    """The ``polygraphy run`` line comparing ``backend`` (``--trt`` or ``--onnxrt``) to them."""
    return (f"polygraphy run {model} {backend} --load-inputs {inputs} --load-outputs {outputs} "
            f"--atol {atol:g} --rtol {rtol:g}")
