"""ST-LSTM: the spatiotemporal LSTM of PredRNN (Wang et al., NeurIPS 2017), stacked N deep, on
STAE's stem: a comparison cell.

One layer k at step t, input X (layer 0: the three encoder latents concatenated along channels,
[S_t, T_t, O_t] with 3C channels; layer k>0: H^{k-1}_t with C channels), ``*`` a 3D conv of
``config.kernel`` with 'same' padding, ``⊙`` the elementwise product, M_in the spatiotemporal
memory handed to this layer (see the zig-zag below)::

    i  = σ(W_xi * X + W_hi * H^k_{t-1} + b_i)
    f  = σ(W_xf * X + W_hf * H^k_{t-1} + b_f + 1)            forget bias +1 (see below)
    g  = tanh(W_xg * X + W_hg * H^k_{t-1} + b_g)
    C^k_t = f ⊙ C^k_{t-1} + i ⊙ g                            temporal memory
    i' = σ(W'_xi * X + W_mi * M_in + b'_i)
    f' = σ(W'_xf * X + W_mf * M_in + b'_f + 1)
    g' = tanh(W'_xg * X + W_mg * M_in + b'_g)
    M^k_t = f' ⊙ M_in + i' ⊙ g'                              spatiotemporal memory
    o  = σ(W_xo * X + W_ho * H^k_{t-1} + W_cmo * [C^k_t, M^k_t] + b_o)
    H^k_t = o ⊙ tanh(W_1x1x1 * [C^k_t, M^k_t])

The seven x-convs are one conv to 7C channels (``conv_x``: i, f, g, i', f', g', o), the four
h-convs one to 4C (``conv_h``: i, f, g, o), the three m-convs one to 3C (``conv_m``: i', f', g'),
the paper's ``W_co * C + W_mo * M`` one conv over [C, M] (``conv_cm``), and ``fuse`` the 1x1x1
conv; the split orders are PredRNN's (thuml ``SpatioTemporalLSTMCell``).

Zig-zag (the paper's M^0_t = M^L_{t-1} in its 1-based layer numbering): M_in of layer 0 at step t
is M^{N-1}_{t-1}, the top layer's M from the previous step; M_in of layer k>0 is M^{k-1}_t, the
layer below's M of this step. One M tensor threads all layers and crosses to the next step.

The top layer's H^{N-1}_t is handed to all three decoders (``Latents(H, H, H)``): SD, TD and OD
each decode it, and eq. (8) fuses them as in STAE, so the comparison with STAM isolates the
recurrent core (same encoders, decoders and head). PredRNN's head is a 1x1 conv of H.

State (per sample):
  hidden           (N, C, T, h, w)   H^k_{t-1} of every layer k
  temporal_memory  (N, C, T, h, w)   C^k_{t-1} of every layer k
  spatial_memory   (C, T, h, w)      M^{N-1}_{t-1}: the top layer's M of the previous step, which
                                     layer 0 reads next (one tensor: the zig-zag)
All start at zeros.

Deviations from the paper, all deliberate:

* a constant +1 added to the forget gates' pre-activations (f and f'), as PredRNN's code does
  (``forget_bias=1.0``; the paper's equations have none);
* every gate conv (x, h, m and [C, M]) is STAE's ``ConvNorm`` (Conv3d with bias + GroupNorm(1, .)
  over each conv's gates together), not the paper's plain conv (nor the code's optional LayerNorm
  over [kC, H, W], off in every OpenSTL benchmark config), so the normalisation matches STAM's;
  ``fuse`` (W_1x1x1) stays a plain conv, as in STAM and PredRNN's code;
* ``W_co * C + W_mo * M`` is one conv over the concatenation [C, M], as in PredRNN's code
  (the same function as two convs summed, but normalised together);
* 3D convs over the latent's T time slices (STAE's latents are clips), not 2D convs over one
  frame's feature map;
* layer 0 reads the concatenation of three encoder latents (STAE's stem), not the frame.
"""
from __future__ import annotations

import torch
from torch import nn

from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import ConvNorm

FORGET_BIAS = 1.0


class STLSTMLayer(nn.Module):
    """One ST-LSTM layer (see the module doc)."""

    def __init__(self, in_channels: int, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        c = channels
        self.conv_x = ConvNorm(in_channels, 7 * c, kernel)  # X         -> i, f, g, i', f', g', o
        self.conv_h = ConvNorm(c, 4 * c, kernel)            # H^k_{t-1} -> i, f, g, o
        self.conv_m = ConvNorm(c, 3 * c, kernel)            # M_in      -> i', f', g'
        self.conv_cm = ConvNorm(2 * c, c, kernel)           # [C^k_t, M^k_t] -> o (W_co, W_mo)
        self.fuse = nn.Conv3d(2 * c, c, 1)                  # W_1x1x1

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, temporal_memory: torch.Tensor,
                spatial_memory: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C_in, T, h, w); hidden H^k_{t-1}, temporal_memory C^k_{t-1} and spatial_memory
        M_in, each (B, C, T, h, w) -> (H^k_t, C^k_t, M^k_t), each (B, C, T, h, w)."""
        i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = self.conv_x(x).chunk(7, dim=1)
        i_h, f_h, g_h, o_h = self.conv_h(hidden).chunk(4, dim=1)
        i_m, f_m, g_m = self.conv_m(spatial_memory).chunk(3, dim=1)

        input_gate = torch.sigmoid(i_x + i_h)
        forget_gate = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        candidate = torch.tanh(g_x + g_h)
        temporal_next = forget_gate * temporal_memory + input_gate * candidate

        input_gate_m = torch.sigmoid(i_xm + i_m)
        forget_gate_m = torch.sigmoid(f_xm + f_m + FORGET_BIAS)
        candidate_m = torch.tanh(g_xm + g_m)
        spatial_next = forget_gate_m * spatial_memory + input_gate_m * candidate_m

        both = torch.cat([temporal_next, spatial_next], dim=1)       # (B, 2C, T, h, w)
        output_gate = torch.sigmoid(o_x + o_h + self.conv_cm(both))
        hidden_next = output_gate * torch.tanh(self.fuse(both))
        return hidden_next, temporal_next, spatial_next


class STLSTMStack(RecurrentCell):
    """N ST-LSTM layers with PredRNN's zig-zag spatiotemporal memory; layer 0 reads [S, T, O]
    (3C channels), layer k>0 reads H^{k-1}_t."""

    unbounded_states = ("temporal_memory", "spatial_memory")

    def __init__(self, config: STAEConfig):
        super().__init__()
        c = config.hidden
        self.layers = nn.ModuleList(STLSTMLayer(3 * c if k == 0 else c, c, config.kernel)
                                    for k in range(config.layers))

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        latent = config.latent_shape                                  # (C, T, h, w)
        return {
            "hidden": (config.layers, *latent),
            "temporal_memory": (config.layers, *latent),
            "spatial_memory": latent,
        }

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        hidden = state["hidden"]                      # (B, N, C, T, h, w)
        temporal = state["temporal_memory"]           # (B, N, C, T, h, w)
        spatial = state["spatial_memory"]             # (B, C, T, h, w): M^{N-1}_{t-1}
        x = torch.cat(latents.streams(), dim=1)           # (B, 3C, T, h, w): [S, T, O]
        next_hidden, next_temporal = [], []
        for k, layer in enumerate(self.layers):
            h, cell, spatial = layer(x, hidden[:, k], temporal[:, k], spatial)   # zig-zag: M^k_t
            next_hidden.append(h)
            next_temporal.append(cell)
            x = h                                     # layer k+1 reads H^k_t
        next_state = {
            "hidden": torch.stack(next_hidden, dim=1),         # (B, N, C, T, h, w)
            "temporal_memory": torch.stack(next_temporal, dim=1),
            "spatial_memory": spatial,                          # M^{N-1}_t -> layer 0 at t+1
        }
        # SD, TD and OD all decode the top layer's H^{N-1}_t.
        return Latents(spatial=x, temporal=x, output=x, hidden=x), next_state
