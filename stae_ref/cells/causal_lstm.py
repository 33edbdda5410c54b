"""Causal LSTM + Gradient Highway Unit: the cell stack of PredRNN++ (Wang et al., ICML 2018),
N layers deep, on STAE's stem: a comparison cell.

One Causal LSTM layer k at step t, input X (layer 0: the three encoder latents concatenated along
channels, [S_t, T_t, O_t] with 3C channels; layer 1: the GHU's Z_t; layer k>1: H^{k-1}_t),
``*`` a 3D conv of ``config.kernel`` with 'same' padding, ``⊙`` the elementwise product, M_in
the spatial memory handed to this layer (see the zig-zag below). The two memories are cascaded:
the temporal memory C is updated first, and the spatial memory M reads the new C^k_t::

    i  = σ(W_xi * X + W_hi * H^k_{t-1} + W_ci * C^k_{t-1} + b_i)
    f  = σ(W_xf * X + W_hf * H^k_{t-1} + W_cf * C^k_{t-1} + b_f + 1)     forget bias +1
    g  = tanh(W_xg * X + W_hg * H^k_{t-1} + W_cg * C^k_{t-1} + b_g)
    C^k_t = f ⊙ C^k_{t-1} + i ⊙ g                                        temporal memory
    i' = σ(W'_xi * X + W'_ci * C^k_t + W_mi * M_in + b'_i)
    f' = σ(W'_xf * X + W'_cf * C^k_t + W_mf * M_in + b'_f + 1)
    g' = tanh(W'_xg * X + W'_cg * C^k_t + b'_g)
    M^k_t = f' ⊙ tanh(W_mm * M_in) + i' ⊙ g'                             spatial memory
    o  = tanh(W_xo * X + W_ho * H^k_{t-1} + W'_co * C^k_t + W_mo * M^k_t + b_o)
    H^k_t = o ⊙ tanh(W_1x1 * [C^k_t, M^k_t])

Gradient Highway Unit between layers 0 and 1 (paper eq. 2), its state Z carried over time::

    P_t = tanh(W_px * H^0_t + W_pz * Z_{t-1})
    S_t = σ(W_sx * H^0_t + W_sz * Z_{t-1})
    Z_t = S_t ⊙ P_t + (1 - S_t) ⊙ Z_{t-1}

and layer 1 reads Z_t as its X. With ``config.layers == 1`` there is no layer 1, hence no GHU
and no ``highway`` state.

Each group of convs reading one tensor is one conv, its gates split in the authors' order (the
TF code, Yunbo426/predrnn-pp ``layers/CausalLSTMCell.py`` and ``GradientHighwayUnit.py``;
OpenSTL ``predrnnpp_modules.py`` is the same): ``conv_x`` X -> 7C (i, g, f, o, i', g', f'),
``conv_h`` H^k_{t-1} -> 4C (i, g, f, o), ``conv_c`` C^k_{t-1} -> 3C (i, g, f), ``conv_m`` M_in ->
3C (i', f', W_mm * M_in), ``conv_c2m`` C^k_t -> 4C (i', g', f', o), ``conv_om`` M^k_t -> C (o),
``fuse`` the 1x1x1 conv; GHU ``conv_z`` Z_{t-1} -> 2C (p, s), ``conv_x`` H^0_t -> 2C (p, s).
The equations above are that code's, term for term: where the paper's printed eq. (1) and its
code disagree, the code (which produced the paper's numbers) is followed. The printed equations
were not compared term by term here (no copy of the PDF was at hand); the code was.

Zig-zag (as PredRNN, and PredRNN++'s ``mem``): M_in of layer 0 at step t is M^{N-1}_{t-1}, the
top layer's M of the previous step; M_in of layer k>0 is M^{k-1}_t. One M tensor threads all
layers and crosses to the next step.

The top layer's H^{N-1}_t is handed to all three decoders (``Latents(H, H, H)``): SD, TD and OD
each decode it and eq. (8) fuses them as in STAE, so the comparison with STAM isolates the
recurrent core (same encoders, decoders and head). PredRNN++'s head is a 1x1 conv of H.

State (per sample):
  hidden           (N, C, T, h, w)   H^k_{t-1} of every layer k
  temporal_memory  (N, C, T, h, w)   C^k_{t-1} of every layer k
  spatial_memory   (C, T, h, w)      M^{N-1}_{t-1}: the top layer's M of the previous step, which
                                     layer 0 reads next (one tensor: the zig-zag)
  highway          (C, T, h, w)      Z_{t-1}: the GHU's state (only when N >= 2)
All start at zeros, as in the authors' code.

Deviations from the paper and its code, all deliberate:

* every gate conv is STAE's ``ConvNorm`` (Conv3d with bias + GroupNorm(1, .) over each conv's
  gates together) where the code has a 2D conv followed, with ``tln=True`` (its scripts' choice),
  by a LayerNorm over the whole conv output: the same statistics, with a per-channel gain and
  shift, so the weights do not depend on the frame size; ``fuse`` (the code's
  ``memory_reduce``) stays a plain conv, as in the code and STAM;
* 3D convs over the latent's T time slices (STAE's latents are clips), not 2D convs over one
  frame's feature map;
* layer 0 reads the concatenation of three encoder latents (STAE's stem), not the frame, and
  every layer has C channels (the code allows per-layer widths: 128, 64, 64, 64).
The constant +1 on the forget gates' pre-activations (f, f') is the code's ``forget_bias=1.0``.
"""
from __future__ import annotations

import torch
from torch import nn

from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import ConvNorm

FORGET_BIAS = 1.0


class CausalLSTMLayer(nn.Module):
    """One Causal LSTM layer (see the module doc)."""

    def __init__(self, in_channels: int, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        c = channels
        self.conv_x = ConvNorm(in_channels, 7 * c, kernel)  # X         -> i, g, f, o, i', g', f'
        self.conv_h = ConvNorm(c, 4 * c, kernel)            # H^k_{t-1} -> i, g, f, o
        self.conv_c = ConvNorm(c, 3 * c, kernel)            # C^k_{t-1} -> i, g, f
        self.conv_m = ConvNorm(c, 3 * c, kernel)            # M_in      -> i', f', W_mm * M_in
        self.conv_c2m = ConvNorm(c, 4 * c, kernel)          # C^k_t     -> i', g', f', o
        self.conv_om = ConvNorm(c, c, kernel)               # M^k_t     -> o
        self.fuse = nn.Conv3d(2 * c, c, 1)                  # W_1x1 over [C^k_t, M^k_t]

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, temporal_memory: torch.Tensor,
                spatial_memory: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C_in, T, h, w); hidden H^k_{t-1}, temporal_memory C^k_{t-1} and spatial_memory
        M_in, each (B, C, T, h, w) -> (H^k_t, C^k_t, M^k_t), each (B, C, T, h, w)."""
        i_x, g_x, f_x, o_x, i_xm, g_xm, f_xm = self.conv_x(x).chunk(7, dim=1)
        i_h, g_h, f_h, o_h = self.conv_h(hidden).chunk(4, dim=1)
        i_c, g_c, f_c = self.conv_c(temporal_memory).chunk(3, dim=1)
        i_m, f_m, m_m = self.conv_m(spatial_memory).chunk(3, dim=1)

        input_gate = torch.sigmoid(i_x + i_h + i_c)
        forget_gate = torch.sigmoid(f_x + f_h + f_c + FORGET_BIAS)
        candidate = torch.tanh(g_x + g_h + g_c)
        temporal_next = forget_gate * temporal_memory + input_gate * candidate

        i_cm, g_cm, f_cm, o_c = self.conv_c2m(temporal_next).chunk(4, dim=1)
        input_gate_m = torch.sigmoid(i_xm + i_cm + i_m)
        forget_gate_m = torch.sigmoid(f_xm + f_cm + f_m + FORGET_BIAS)
        candidate_m = torch.tanh(g_xm + g_cm)
        spatial_next = forget_gate_m * torch.tanh(m_m) + input_gate_m * candidate_m

        output_gate = torch.tanh(o_x + o_h + o_c + self.conv_om(spatial_next))
        hidden_next = output_gate * torch.tanh(
            self.fuse(torch.cat([temporal_next, spatial_next], dim=1)))
        return hidden_next, temporal_next, spatial_next


class GradientHighwayUnit(nn.Module):
    """The GHU (PredRNN++ eq. 2): a gated highway from H^0_t past the deeper layers."""

    def __init__(self, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.conv_x = ConvNorm(channels, 2 * channels, kernel)   # H^0_t   -> p, s
        self.conv_z = ConvNorm(channels, 2 * channels, kernel)   # Z_{t-1} -> p, s

    def forward(self, x: torch.Tensor, highway: torch.Tensor) -> torch.Tensor:
        """x H^0_t and highway Z_{t-1}, each (B, C, T, h, w) -> Z_t (B, C, T, h, w)."""
        p_x, s_x = self.conv_x(x).chunk(2, dim=1)
        p_z, s_z = self.conv_z(highway).chunk(2, dim=1)
        transformed = torch.tanh(p_x + p_z)
        switch = torch.sigmoid(s_x + s_z)
        return switch * transformed + (1.0 - switch) * highway


class CausalLSTMStack(RecurrentCell):
    """N Causal LSTM layers with PredRNN's zig-zag spatial memory and a GHU between layers 0
    and 1; layer 0 reads [S, T, O] (3C channels), layer 1 Z_t, layer k>1 H^{k-1}_t."""

    unbounded_states = ("temporal_memory",)

    def __init__(self, config: STAEConfig):
        super().__init__()
        c = config.hidden
        self.layers = nn.ModuleList(CausalLSTMLayer(3 * c if k == 0 else c, c, config.kernel)
                                    for k in range(config.layers))
        self.highway = GradientHighwayUnit(c, config.kernel) if config.layers >= 2 else None

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        latent = config.latent_shape                                  # (C, T, h, w)
        shapes = {
            "hidden": (config.layers, *latent),
            "temporal_memory": (config.layers, *latent),
            "spatial_memory": latent,
        }
        if config.layers >= 2:
            shapes["highway"] = latent
        return shapes

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        hidden = state["hidden"]                      # (B, N, C, T, h, w)
        temporal = state["temporal_memory"]           # (B, N, C, T, h, w)
        spatial = state["spatial_memory"]             # (B, C, T, h, w): M^{N-1}_{t-1}
        x = torch.cat(latents.streams(), dim=1)           # (B, 3C, T, h, w): [S, T, O]
        next_hidden, next_temporal = [], []
        next_state: dict[str, torch.Tensor] = {}
        for k, layer in enumerate(self.layers):
            h, cell, spatial = layer(x, hidden[:, k], temporal[:, k], spatial)   # zig-zag: M^k_t
            next_hidden.append(h)
            next_temporal.append(cell)
            x = h                                     # layer k+1 reads H^k_t ...
            if k == 0 and self.highway is not None:
                x = self.highway(h, state["highway"])  # ... except layer 1: Z_t
                next_state["highway"] = x
        next_state = {
            "hidden": torch.stack(next_hidden, dim=1),         # (B, N, C, T, h, w)
            "temporal_memory": torch.stack(next_temporal, dim=1),
            "spatial_memory": spatial,                          # M^{N-1}_t -> layer 0 at t+1
            **next_state,
        }
        top = next_hidden[-1]                         # SD, TD and OD all decode H^{N-1}_t
        return Latents(spatial=top, temporal=top, output=top, hidden=top), next_state
