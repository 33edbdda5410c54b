"""STAM with a bounded memory: the input gate decides how much of the memory is replaced.

The paper's update ``C = i ⊙ g + f ⊙ ATT(f, ring)`` lets the memory grow without limit when the
forget gate sits near 1 (a model trained on short sequences does exactly that: its cell state
grew from ~50 to ~590 over a 1,000-step stream). This cell couples the two gates, as the
coupled-input-forget-gate LSTM does:

    C = i ⊙ g + (1 - i) ⊙ ATT(f, ring)

ATT is a softmax-weighted average of the ring slots (weights sum to 1), g = tanh(.) lies in
(-1, 1) and i in (0, 1), so C is a convex combination of values in [-R, R] with
R = max(1, max |ring|). Rings start at zero, hence every temporal and spatial memory stays in
(-1, 1) on every step of any stream, for any weights and any input. The forget gate still sets the
attention scores. Same parameters and state as ``stam``; a documented deviation from the paper,
chosen for streams that run for hours and for INT8 (a fixed, known state range).
"""
from __future__ import annotations

import torch

from stae_deploy.stae_ref.cells.stam import STAMLayer, STAMStack, memory_attention


class BoundedSTAMLayer(STAMLayer):
    """A STAM layer whose temporal and spatial memories are convex updates (see module doc)."""

    @staticmethod
    def memory_update(input_gate: torch.Tensor, candidate: torch.Tensor,
                      forget_gate: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
        """``i ⊙ g + (1 - i) ⊙ ATT(f, ring)``; shapes as :meth:`STAMLayer.memory_update`."""
        return (input_gate * candidate
                + (1.0 - input_gate) * memory_attention(forget_gate, ring))


class BoundedSTAMStack(STAMStack):
    """N bounded STAM layers; state layout identical to :class:`STAMStack`."""

    unbounded_states = ()

    layer_class = BoundedSTAMLayer
