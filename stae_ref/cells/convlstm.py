"""ConvLSTM (Shi et al., NeurIPS 2015), stacked N deep, on STAE's stem: a comparison cell.

One layer k at step t, input X (layer 0: the three encoder latents concatenated along channels,
[S_t, T_t, O_t] with 3C channels; layer k>0: H^{k-1}_t with C channels), ``*`` a 3D conv of
``config.kernel`` with 'same' padding, ``⊙`` the elementwise product::

    i = σ(W_xi * X + W_hi * H^k_{t-1} + b_i)
    f = σ(W_xf * X + W_hf * H^k_{t-1} + b_f + 1)          forget bias +1 (see below)
    g = tanh(W_xg * X + W_hg * H^k_{t-1} + b_g)
    o = σ(W_xo * X + W_ho * H^k_{t-1} + b_o)
    C^k_t = f ⊙ C^k_{t-1} + i ⊙ g
    H^k_t = o ⊙ tanh(C^k_t)

The four x-convs are one conv to 4C channels (``conv_x``), the four h-convs another
(``conv_h``), each split i, f, g, o. The top layer's H^{N-1}_t is handed to all three decoders
(``Latents(H, H, H)``): SD, TD and OD each decode it, and eq. (8) fuses them as in STAE, so the
comparison with STAM isolates the recurrent core (same encoders, decoders and head).

State (per sample):
  hidden      (N, C, T, h, w)   H^k_{t-1} of every layer k
  cell_state  (N, C, T, h, w)   C^k_{t-1} of every layer k
Both start at zeros.

Deviations from the paper, all deliberate:

* no peephole terms (the paper's ``W_ci ⊙ C_{t-1}``, ``W_cf ⊙ C_{t-1}``, ``W_co ⊙ C_t``): as
  in PredRNN's and OpenSTL's ConvLSTM code, which every later comparison uses;
* a constant +1 added to the forget gate's pre-activation, as PredRNN's code does
  (``forget_bias=1.0``; OpenSTL defines it but does not add it), so an untrained layer starts
  by keeping its memory;
* every gate conv is STAE's ``ConvNorm`` (Conv3d with bias + GroupNorm(1, 4C) over the four
  gates' pre-activations together), not the paper's plain conv (nor OpenSTL's optional
  LayerNorm), so the normalisation matches STAM's;
* 3D convs over the latent's T time slices (STAE's latents are clips), not 2D convs over one
  frame's feature map;
* layer 0 reads the concatenation of three encoder latents (STAE's stem), not one input.
"""
from __future__ import annotations

import torch
from torch import nn

from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import ConvNorm

FORGET_BIAS = 1.0


class ConvLSTMLayer(nn.Module):
    """One ConvLSTM layer without peepholes (see the module doc)."""

    def __init__(self, in_channels: int, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.conv_x = ConvNorm(in_channels, 4 * channels, kernel)   # X         -> i, f, g, o
        self.conv_h = ConvNorm(channels, 4 * channels, kernel)      # H^k_{t-1} -> i, f, g, o

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C_in, T, h, w); hidden, cell (B, C, T, h, w) -> (H^k_t, C^k_t)."""
        i_x, f_x, g_x, o_x = self.conv_x(x).chunk(4, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(hidden).chunk(4, dim=1)
        input_gate = torch.sigmoid(i_x + i_h)
        forget_gate = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        candidate = torch.tanh(g_x + g_h)
        output_gate = torch.sigmoid(o_x + o_h)
        cell_next = forget_gate * cell + input_gate * candidate
        return output_gate * torch.tanh(cell_next), cell_next


class ConvLSTMStack(RecurrentCell):
    """N ConvLSTM layers; layer 0 reads [S, T, O] (3C channels), layer k>0 reads H^{k-1}_t."""

    unbounded_states = ("cell_state",)

    def __init__(self, config: STAEConfig):
        super().__init__()
        c = config.hidden
        self.layers = nn.ModuleList(ConvLSTMLayer(3 * c if k == 0 else c, c, config.kernel)
                                    for k in range(config.layers))

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        latent = config.latent_shape                                  # (C, T, h, w)
        return {
            "hidden": (config.layers, *latent),
            "cell_state": (config.layers, *latent),
        }

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        hidden = state["hidden"]                      # (B, N, C, T, h, w)
        cells = state["cell_state"]                   # (B, N, C, T, h, w)
        x = torch.cat(latents.streams(), dim=1)           # (B, 3C, T, h, w): [S, T, O]
        next_hidden, next_cells = [], []
        for k, layer in enumerate(self.layers):
            h, cell = layer(x, hidden[:, k], cells[:, k])
            next_hidden.append(h)
            next_cells.append(cell)
            x = h                                     # layer k+1 reads H^k_t
        next_state = {
            "hidden": torch.stack(next_hidden, dim=1),      # (B, N, C, T, h, w)
            "cell_state": torch.stack(next_cells, dim=1),   # (B, N, C, T, h, w)
        }
        # SD, TD and OD all decode the top layer's H^{N-1}_t.
        return Latents(spatial=x, temporal=x, output=x, hidden=x), next_state
