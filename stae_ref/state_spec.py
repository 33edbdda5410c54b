"""What the reference's state *is*: STAEConfig -> the state protocol (stae_deploy.runtime.protocol.IOSpec).

The only place that names the model's tensors. The frame and prediction are RGB float32 in [0, 1],
NCHW; the clip window holds the previous ``clip_len - 1`` frames; the rest is the cell's state.
Each state input ``X`` is paired with the output ``next_X``.
"""
from __future__ import annotations

from stae_deploy.runtime.protocol import Dim, IOSpec, StatePair, TensorSpec
from stae_deploy.stae_ref.cells import cell_class
from stae_deploy.stae_ref.config import STAEConfig

FRAME = "frame"
PREDICTION = "prediction"
CLIP_WINDOW = "clip_window"
NEXT_PREFIX = "next_"


def io_spec(config: STAEConfig, batch: Dim = 1) -> IOSpec:
    """The state protocol of a model built from ``config``; ``batch`` is an int or ``"batch"``."""
    height, width = config.frame_size
    cell = cell_class(config)
    state_shapes = {
        CLIP_WINDOW: (config.clip_len - 1, 3, height, width),   # previous frames, oldest first
        **cell.state_shapes(config),
    }
    return IOSpec(
        data_inputs=(TensorSpec(FRAME, (batch, 3, height, width)),),
        data_outputs=(TensorSpec(PREDICTION, (batch, 3, height, width)),),
        state=tuple(StatePair(TensorSpec(name, (batch, *shape)),
                              TensorSpec(NEXT_PREFIX + name, (batch, *shape)),
                              unbounded=name in cell.unbounded_states)
                    for name, shape in state_shapes.items()),
    )
