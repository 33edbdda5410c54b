"""The interface every recurrent cell stack implements."""
from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import nn

from stae_deploy.stae_ref.config import STAEConfig


class Latents(NamedTuple):
    """Three latents, each (B, C, T, h, w): into the cell from SE/TE/OE, out of it to SD/TD/OD.

    ``hidden``: out of a cell, its top layer's hidden state H (B, C, T, h, w), what the one
    decoder of the ablation "STAE w/o ED" reads (``encoder_decoder="shared"``); unused going in.
    """

    spatial: torch.Tensor
    temporal: torch.Tensor
    output: torch.Tensor
    hidden: torch.Tensor | None = None

    def streams(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(spatial, temporal, output): the three encoder/decoder streams, without ``hidden``."""
        return self.spatial, self.temporal, self.output


class RecurrentCell(nn.Module):
    """Base class of a recurrent cell stack: declares its state and runs one time step.

    The fast export graph (``stae_deploy.export.time_stacked``) runs a cell's own code on time-stacked
    ``(B, C*T, h, w)`` latents: a cell that only splits, concatenates and stacks along the
    channel axis (dim 1) and indexes its ring axes, with latent-shaped state, exports fast.
    """

    # State tensors with no bound by construction (an LSTM memory ``c = f ⊙ c + i ⊙ g`` grows by
    # up to 1 per step on a long stream). Stored in the protocol (``StatePair.unbounded``); INT8
    # keeps the convolutions fed by them in float (``stae_deploy.calibration.unbounded_state``).
    unbounded_states: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        """Per-sample shapes (no batch axis) of this cell's state tensors, in protocol order."""
        raise NotImplementedError

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        """One time step: (encoder latents, state) -> (decoder latents, next state)."""
        raise NotImplementedError
