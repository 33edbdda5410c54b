"""STAM: the SpatioTemporal Attention based Memory cell of STAE (eqs. 3-6), stacked N deep.

State (per sample, newest ring slot last):
  hidden         (N, C, T, h, w)     H^k_{t-1} of every layer k
  temporal_ring  (N, tau, C, T, h, w) C^k_{t-tau..t-1}: each layer's own last tau cell states
  spatial_ring   (tau, C, T, h, w)    M^{N*t+k-tau..N*t+k-1}: the last tau spatial states, one
                                      global ring shifted after *every layer*, so it crosses
                                      layers and time (the zig-zag of PredRNN/STAM)

Warm-up (a definition every backend shares): all rings start at zeros and all tau slots take part
in the attention softmax from step 0.

Unlike the public STAM code, the temporal ring holds the real last tau states (that code appends
one aliased list, so its window is tau copies of C_{t-1}).
"""
from __future__ import annotations

import torch
from torch import nn

from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import ConvNorm

FORGET_BIAS = 1.0


def memory_attention(forget_gate: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
    """ATT_t / ATT_s: per-element softmax over the ring of the forget-gated scores.

    ``w_j = softmax_j(F ⊙ X_j)``, ``ATT = Σ_j w_j ⊙ X_j`` for the ring slots j (no scaling).
    forget_gate: (B, C, T, h, w); ring: (B, tau, C, T, h, w) -> (B, C, T, h, w).
    """
    scores = forget_gate.unsqueeze(1) * ring       # (B, tau, C, T, h, w)
    weights = torch.softmax(scores, dim=1)         # (B, tau, C, T, h, w), sums to 1 over tau
    return (weights * ring).sum(dim=1)             # (B, C, T, h, w)


def push(ring: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Drop the oldest slot of ``ring`` (B, tau, ...) and append ``newest`` (B, ...) last."""
    return torch.cat([ring[:, 1:], newest.unsqueeze(1)], dim=1)


class STAMLayer(nn.Module):
    """One STAM layer k: temporal module (eq. 4), spatial module (eq. 5), output module (eq. 6)."""

    def __init__(self, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        c = channels
        self.conv_t = ConvNorm(c, 3 * c, kernel)      # T_t        -> i, g, f   (W_x*)
        self.conv_s = ConvNorm(c, 3 * c, kernel)      # S_t        -> i', g', f' (w_x*)
        self.conv_o = ConvNorm(c, c, kernel)          # O_t        -> o          (W_xo)
        self.conv_h = ConvNorm(c, 4 * c, kernel)      # H^k_{t-1}  -> i, g, f, o (W_h*)
        self.conv_m = ConvNorm(c, 3 * c, kernel)      # M^{Nt+k-1} -> i', g', f' (w_m*)
        self.conv_cm = ConvNorm(2 * c, c, kernel)     # [C^k_t, M^{Nt+k}] -> o   (W_co, W_mo)
        self.fuse = nn.Conv3d(2 * c, c, 1)            # W_1x1x1 of eq. (6)

    def forward(self, spatial_in: torch.Tensor, temporal_in: torch.Tensor,
                output_in: torch.Tensor, hidden: torch.Tensor, temporal_ring: torch.Tensor,
                spatial_ring: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs (B, C, T, h, w) except the rings (B, tau, C, T, h, w).

        Returns (H^k_t, C^k_t, M^{Nt+k}, O^k_t), each (B, C, T, h, w).
        """
        i_x, g_x, f_x = self.conv_t(temporal_in).chunk(3, dim=1)
        i_h, g_h, f_h, o_h = self.conv_h(hidden).chunk(4, dim=1)
        i_t = torch.sigmoid(i_x + i_h)
        g_t = torch.tanh(g_x + g_h)
        f_t = torch.sigmoid(f_x + f_h + FORGET_BIAS)
        cell = self.memory_update(i_t, g_t, f_t, temporal_ring)                     # eq. (4)

        previous_spatial = spatial_ring[:, -1]                                      # M^{Nt+k-1}
        i_sx, g_sx, f_sx = self.conv_s(spatial_in).chunk(3, dim=1)
        i_m, g_m, f_m = self.conv_m(previous_spatial).chunk(3, dim=1)
        i_s = torch.sigmoid(i_sx + i_m)
        g_s = torch.tanh(g_sx + g_m)
        f_s = torch.sigmoid(f_sx + f_m + FORGET_BIAS)
        spatial = self.memory_update(i_s, g_s, f_s, spatial_ring)                   # eq. (5)

        both = torch.cat([cell, spatial], dim=1)                                    # (B, 2C, T, h, w)
        output_gate = torch.sigmoid(self.conv_o(output_in) + o_h + self.conv_cm(both))
        hidden_next = output_gate * torch.tanh(self.fuse(both))                     # eq. (6)
        return hidden_next, cell, spatial, output_gate

    @staticmethod
    def memory_update(input_gate: torch.Tensor, candidate: torch.Tensor,
                      forget_gate: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
        """The paper's memory update ``i ⊙ g + f ⊙ ATT(f, ring)`` (eqs. 4 and 5).

        Gates and candidate (B, C, T, h, w), ring (B, tau, C, T, h, w). Not bounded: with f near
        1 every step can add up to |g| <= 1 to the memory.
        """
        return input_gate * candidate + forget_gate * memory_attention(forget_gate, ring)


class STAMStack(RecurrentCell):
    """N STAM layers (eq. 3: layer k>1 takes H^{k-1}_t as its S, T and O inputs)."""

    unbounded_states = ("temporal_ring", "spatial_ring")

    layer_class: type[STAMLayer] = STAMLayer

    def __init__(self, config: STAEConfig):
        super().__init__()
        self.layers = nn.ModuleList(self.layer_class(config.hidden, config.kernel)
                                    for _ in range(config.layers))

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        latent = config.latent_shape                                  # (C, T, h, w)
        return {
            "hidden": (config.layers, *latent),
            "temporal_ring": (config.layers, config.tau, *latent),
            "spatial_ring": (config.tau, *latent),
        }

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        hidden = state["hidden"]                      # (B, N, C, T, h, w)
        temporal_rings = state["temporal_ring"]       # (B, N, tau, C, T, h, w)
        spatial_ring = state["spatial_ring"]          # (B, tau, C, T, h, w)
        spatial_in, temporal_in, output_in = latents.streams()
        next_hidden, next_temporal_rings = [], []
        for k, layer in enumerate(self.layers):
            h, cell, spatial, output_gate = layer(
                spatial_in, temporal_in, output_in, hidden[:, k], temporal_rings[:, k],
                spatial_ring)
            next_hidden.append(h)
            next_temporal_rings.append(push(temporal_rings[:, k], cell))
            spatial_ring = push(spatial_ring, spatial)                 # zig-zag: every layer
            spatial_in = temporal_in = output_in = h                   # eq. (3)
        next_state = {
            "hidden": torch.stack(next_hidden, dim=1),                 # (B, N, C, T, h, w)
            "temporal_ring": torch.stack(next_temporal_rings, dim=1),  # (B, N, tau, C, T, h, w)
            "spatial_ring": spatial_ring,                              # (B, tau, C, T, h, w)
        }
        # SD reads M^{Nt+N}, TD reads C^N_t, OD reads O^N_t (eq. 7); a standard decoder, H^N_t.
        return Latents(spatial=spatial, temporal=cell, output=output_gate, hidden=h), next_state
