"""Size and cost of a model: parameter count and GFLOP per step (torch's FLOP counter)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from stae_deploy.stae_ref.model import STAE


def parameter_count(model: torch.nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def gflop_per_step(model: STAE, frame_size: tuple[int, int]) -> float:
    """GFLOP of one step at ``frame_size`` (batch 1), counting a multiply-add as 2 FLOP.

    torch's counter covers convolutions and matmuls, not elementwise ops or normalisation.
    """
    state = model.zero_state(1, frame_size)
    frame = torch.zeros(1, 3, *frame_size, device=next(model.parameters()).device)
    counter = FlopCounterMode(display=False)
    with counter:
        model.step(frame, state)
    return counter.get_total_flops() / 1e9
