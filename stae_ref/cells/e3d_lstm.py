"""E3D-LSTM: the Eidetic 3D LSTM (Wang et al., ICLR 2019), stacked N deep, on STAE's stem: a
comparison cell.

One layer k at step t, input X (layer 0: the three encoder latents concatenated along channels,
[S_t, T_t, O_t] with 3C channels; layer k>0: H^{k-1}_t with C channels), ``*`` a 3D conv of
``config.kernel`` with 'same' padding, ``⊙`` the elementwise product, ``W_{t-tau:t-1}`` this
layer's window of its last tau cell states C^k_{t-tau} .. C^k_{t-1} (C^k_{t-1} is its newest
slot), M_in the global memory handed to this layer (see the zig-zag below)::

    i  = σ(W_xi * X + W_hi * H^k_{t-1} + b_i)
    g  = tanh(W_xg * X + W_hg * H^k_{t-1} + b_g)
    r  = σ(W_xr * X + W_hr * H^k_{t-1} + b_r)                           recall gate
    RECALL = softmax(r · W_{t-tau:t-1}ᵀ) · W_{t-tau:t-1}
    C^k_t = LN(C^k_{t-1} + RECALL) + i ⊙ g                              eidetic memory
    i' = σ(W'_xi * X + W_mi * M_in + b'_i)
    f' = σ(W'_xf * X + W_mf * M_in + b'_f + 1)                          forget bias +1
    g' = tanh(W'_xg * X + W_mg * M_in + b'_g)
    M^k_t = f' ⊙ tanh(W_mm * M_in) + i' ⊙ g'                            global memory
    o  = σ(tanh(W_xo * X + W_ho * H^k_{t-1} + W_co * C^k_t + W_mo * M^k_t + b_o))
    H^k_t = o ⊙ tanh(W_1x1x1 * [C^k_t, M^k_t])

RECALL is the official code's attention (google/e3d_lstm ``src/layers/rnn_cell.py`` ``_attn``):
tokens are positions, features are channel vectors. The query r (C, T, h, w) is T*h*w tokens of C
features; keys and values are the window's tau*T*h*w tokens; ``softmax`` runs over all of a
query's tau*T*h*w keys; the scores are plain dot products, with no 1/sqrt(C) scaling, as in the
official code (r lies in (0, 1), so a score is at most the sum of one key's channels). Per layer
that is a (T*h*w) x (tau*T*h*w) score matrix, quadratic in the latent's area: 512 x 2,560 for the
paper's latent 64x2x16x16 and tau 5, two matmuls of 84 M multiply-adds each. ``LN`` is
GroupNorm(1, C): a LayerNorm over (C, T, h, w) with a per-channel gain and shift, like the
official ``layers.layer_norm``.

Everything else is the official code's cell, term for term, split orders included: ``conv_x``
X -> 7C (i, g, r, o, i', g', f'), ``conv_h`` H^k_{t-1} -> 4C (i, g, r, o), ``conv_m`` M_in ->
4C (i', f', g', W_mm * M_in), ``conv_oc`` C^k_t -> C, ``conv_om`` M^k_t -> C, ``fuse`` the 1x1x1
conv. Where the paper's printed equations differ from that code, the code (which produced the
paper's numbers) is followed; note its ``f' ⊙ tanh(W_mm * M_in)`` and ``σ(tanh(...))``. The
printed equations were not compared term by term here (no copy of the PDF was at hand).

Zig-zag (the official ``memory``): M_in of layer 0 at step t is M^{N-1}_{t-1}, the top layer's
global memory of the previous step; M_in of layer k>0 is M^{k-1}_t. One M tensor threads all
layers and crosses to the next step.

The top layer's H^{N-1}_t is handed to all three decoders (``Latents(H, H, H)``): SD, TD and OD
each decode it and eq. (8) fuses them as in STAE, so the comparison with STAM isolates the
recurrent core (same encoders, decoders and head). E3D's head is a (2,1,1) conv of H.

State (per sample, newest ring slot last):
  hidden          (N, C, T, h, w)       H^k_{t-1} of every layer k
  temporal_ring   (N, tau, C, T, h, w)  C^k_{t-tau..t-1}: each layer's own last tau cell states,
                                        the RECALL window; its newest slot is C^k_{t-1}
  spatial_memory  (C, T, h, w)          M^{N-1}_{t-1}: the top layer's global memory of the
                                        previous step, which layer 0 reads next (the zig-zag)
All start at zeros. Warm-up (as STAM's): all tau slots take part in the softmax from step 0, a
zero slot with score 0.

Deviations from the official code, all deliberate:

* **the global memory is updated.** The official cell computes the new global memory, uses it
  for its own output, and returns the *old* one, so M never changes from its zero start. The
  authors acknowledged this as a bug absent from their original experiments (google/e3d_lstm#1,
  2020-07-06; OpenSTL's port keeps it). Here each layer hands M^k_t on.
* **a fixed window of tau cell states** (a ring, zero-initialised, newest last). The official
  history is concatenated every step and never truncated (the window is every past step), which
  no fixed-shape state protocol can carry; metrofun/E3D-LSTM also uses a fixed tau FIFO.
* every kernel conv is STAE's ``ConvNorm`` (Conv3d with bias + GroupNorm(1, .) over each conv's
  gates together), also ``conv_oc`` and ``conv_om``, which the official code leaves without
  LayerNorm; ``fuse`` stays a plain conv, as in the code and STAM. The official LayerNorms
  normalise the whole conv output with a per-channel gain and shift: the same statistics;
* the conv kernel is ``config.kernel`` (3x3x3 in the demo, the paper's 2x5x5 cannot pad 'same'
  symmetrically) over the latent's T = clip_len time slices (official: a window of 2 frames);
* layer 0 reads the concatenation of three encoder latents (STAE's stem), not the frames.

Layouts: the fast export graph (``stae_deploy.export.time_stacked``) runs this code on time-stacked
``(B, C*T, h, w)`` tensors. Convs, gates and the norm are layout-agnostic; RECALL is not (it
moves channels to the feature axis), so :func:`recall` recognises the stacked layout by rank
and views it as ``(B, C, T, h, w)`` first (channel ``c*T + t`` is (c, t)): free reshapes, the
same numbers.
"""
from __future__ import annotations

import torch
from torch import nn

from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.cells.stam import push
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import ConvNorm

FORGET_BIAS = 1.0


def recall(query: torch.Tensor, window: torch.Tensor, channels: int) -> torch.Tensor:
    """RECALL(r, window) = softmax(r · windowᵀ) · window; tokens: positions, features: channels.

    query: (B, C, T, h, w); window: (B, tau, C, T, h, w) -> (B, C, T, h, w). In the fast graph's
    time-stacked layout: query (B, C*T, h, w), window (B, tau, C*T, h, w) -> (B, C*T, h, w);
    ``channels`` (C) tells the layouts apart.
    """
    stacked = query.dim() == 4
    if stacked:
        query = query.unflatten(1, (channels, -1))                  # (B, C, T, h, w)
        window = window.unflatten(2, (channels, -1))                # (B, tau, C, T, h, w)
    queries = query.flatten(2).transpose(1, 2)                      # (B, THW, C)
    keys = window.transpose(1, 2).flatten(2)                        # (B, C, tau*THW) = values
    weights = torch.softmax(torch.matmul(queries, keys), dim=-1)    # (B, THW, tau*THW)
    attended = torch.matmul(keys, weights.transpose(1, 2))          # (B, C, THW)
    attended = attended.reshape(query.shape)                        # (B, C, T, h, w)
    return attended.flatten(1, 2) if stacked else attended


class E3DLSTMLayer(nn.Module):
    """One E3D-LSTM layer (see the module doc)."""

    def __init__(self, in_channels: int, channels: int, kernel: tuple[int, int, int]):
        super().__init__()
        c = self.channels = channels
        self.conv_x = ConvNorm(in_channels, 7 * c, kernel)  # X         -> i, g, r, o, i', g', f'
        self.conv_h = ConvNorm(c, 4 * c, kernel)            # H^k_{t-1} -> i, g, r, o
        self.conv_m = ConvNorm(c, 4 * c, kernel)            # M_in      -> i', f', g', W_mm * M_in
        self.conv_oc = ConvNorm(c, c, kernel)               # C^k_t     -> o
        self.conv_om = ConvNorm(c, c, kernel)               # M^k_t     -> o
        self.cell_norm = nn.GroupNorm(1, c)                 # LN(C^k_{t-1} + RECALL)
        self.fuse = nn.Conv3d(2 * c, c, 1)                  # W_1x1x1 over [C^k_t, M^k_t]

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, temporal_ring: torch.Tensor,
                spatial_memory: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C_in, T, h, w); hidden H^k_{t-1} and spatial_memory M_in (B, C, T, h, w);
        temporal_ring C^k_{t-tau..t-1} (B, tau, C, T, h, w), newest last.

        Returns (H^k_t, C^k_t, M^k_t), each (B, C, T, h, w).
        """
        i_x, g_x, r_x, o_x, i_xm, g_xm, f_xm = self.conv_x(x).chunk(7, dim=1)
        i_h, g_h, r_h, o_h = self.conv_h(hidden).chunk(4, dim=1)
        input_gate = torch.sigmoid(i_x + i_h)
        candidate = torch.tanh(g_x + g_h)
        recall_gate = torch.sigmoid(r_x + r_h)
        previous_cell = temporal_ring[:, -1]                                     # C^k_{t-1}
        cell = (self.cell_norm(previous_cell + recall(recall_gate, temporal_ring, self.channels))
                + input_gate * candidate)

        i_m, f_m, g_m, m_m = self.conv_m(spatial_memory).chunk(4, dim=1)
        input_gate_m = torch.sigmoid(i_xm + i_m)
        forget_gate_m = torch.sigmoid(f_xm + f_m + FORGET_BIAS)
        candidate_m = torch.tanh(g_xm + g_m)
        spatial = forget_gate_m * torch.tanh(m_m) + input_gate_m * candidate_m

        output_gate = torch.sigmoid(torch.tanh(
            o_x + o_h + self.conv_oc(cell) + self.conv_om(spatial)))
        hidden_next = output_gate * torch.tanh(self.fuse(torch.cat([cell, spatial], dim=1)))
        return hidden_next, cell, spatial


class E3DLSTMStack(RecurrentCell):
    """N E3D-LSTM layers with a fixed tau-slot RECALL window per layer and the zig-zag global
    memory; layer 0 reads [S, T, O] (3C channels), layer k>0 reads H^{k-1}_t."""

    def __init__(self, config: STAEConfig):
        super().__init__()
        c = config.hidden
        self.layers = nn.ModuleList(E3DLSTMLayer(3 * c if k == 0 else c, c, config.kernel)
                                    for k in range(config.layers))

    @classmethod
    def state_shapes(cls, config: STAEConfig) -> dict[str, tuple[int, ...]]:
        latent = config.latent_shape                                  # (C, T, h, w)
        return {
            "hidden": (config.layers, *latent),
            "temporal_ring": (config.layers, config.tau, *latent),
            "spatial_memory": latent,
        }

    def forward(self, latents: Latents, state: dict[str, torch.Tensor]
                ) -> tuple[Latents, dict[str, torch.Tensor]]:
        hidden = state["hidden"]                      # (B, N, C, T, h, w)
        rings = state["temporal_ring"]                # (B, N, tau, C, T, h, w)
        spatial = state["spatial_memory"]             # (B, C, T, h, w): M^{N-1}_{t-1}
        x = torch.cat(latents.streams(), dim=1)           # (B, 3C, T, h, w): [S, T, O]
        next_hidden, next_rings = [], []
        for k, layer in enumerate(self.layers):
            h, cell, spatial = layer(x, hidden[:, k], rings[:, k], spatial)   # zig-zag: M^k_t
            next_hidden.append(h)
            next_rings.append(push(rings[:, k], cell))
            x = h                                     # layer k+1 reads H^k_t
        next_state = {
            "hidden": torch.stack(next_hidden, dim=1),         # (B, N, C, T, h, w)
            "temporal_ring": torch.stack(next_rings, dim=1),   # (B, N, tau, C, T, h, w)
            "spatial_memory": spatial,                          # M^{N-1}_t -> layer 0 at t+1
        }
        # SD, TD and OD all decode the top layer's H^{N-1}_t.
        return Latents(spatial=x, temporal=x, output=x, hidden=x), next_state
