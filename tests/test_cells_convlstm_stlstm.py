"""The comparison cells ConvLSTM and ST-LSTM: state protocol, the papers' equations
written out by hand, PredRNN's zig-zag memory, and export + parity + runtime on the fast graph."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stae_deploy.export.to_onnx import export_onnx
from stae_deploy.serving.triton_graph import state_mispairs
from stae_deploy.stae_ref.cells import Latents, cell_class
from stae_deploy.stae_ref.cells.convlstm import ConvLSTMLayer, ConvLSTMStack
from stae_deploy.stae_ref.cells.st_lstm import STLSTMLayer, STLSTMStack
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip
from stae_deploy.stae_ref.layers import ConvNorm
from stae_deploy.stae_ref.state_spec import io_spec

from conftest import (SMALL_CONFIG, assert_export_passes_and_runs, assert_fast_graph_is_the_reference_step, random_provenance, seeded_model)

CELLS = ("convlstm", "st_lstm")


def config_for(cell: str, **changes) -> STAEConfig:
    return STAEConfig.from_dict({**SMALL_CONFIG.to_dict(), "cell": cell, **changes})


# ---------------------------------------------------------------- hand-written equations

def gate_convs(conv_norm: ConvNorm, x: torch.Tensor, gates: int) -> list[torch.Tensor]:
    """``conv_norm(x)`` split into its gates, written out: one conv per gate with that gate's
    weight rows (W_x?), then GroupNorm(1, .) by hand over all the gates' pre-activations."""
    weight, bias = conv_norm.conv.weight, conv_norm.conv.bias
    rows = weight.shape[0] // gates
    padding = tuple(k // 2 for k in weight.shape[2:])
    parts = [F.conv3d(x, weight[g * rows:(g + 1) * rows], bias[g * rows:(g + 1) * rows],
                      padding=padding) for g in range(gates)]
    z = torch.cat(parts, dim=1)
    mean = z.mean(dim=(1, 2, 3, 4), keepdim=True)
    var = z.var(dim=(1, 2, 3, 4), unbiased=False, keepdim=True)
    gamma = conv_norm.norm.weight.view(1, -1, 1, 1, 1)
    beta = conv_norm.norm.bias.view(1, -1, 1, 1, 1)
    z = (z - mean) / torch.sqrt(var + conv_norm.norm.eps) * gamma + beta
    return list(z.split(rows, dim=1))


def convlstm_reference(layer: ConvLSTMLayer, x, h_prev, c_prev):
    """Shi et al. (2015) without peepholes, forget bias +1 (PredRNN's code)."""
    i_x, f_x, g_x, o_x = gate_convs(layer.conv_x, x, 4)
    i_h, f_h, g_h, o_h = gate_convs(layer.conv_h, h_prev, 4)
    i = torch.sigmoid(i_x + i_h)
    f = torch.sigmoid(f_x + f_h + 1.0)
    g = torch.tanh(g_x + g_h)
    o = torch.sigmoid(o_x + o_h)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def st_lstm_reference(layer: STLSTMLayer, x, h_prev, c_prev, m_in):
    """Wang et al. (2017) eq. (3), forget biases +1 (PredRNN's code)."""
    i_x, f_x, g_x, i_xm, f_xm, g_xm, o_x = gate_convs(layer.conv_x, x, 7)
    i_h, f_h, g_h, o_h = gate_convs(layer.conv_h, h_prev, 4)
    i_m, f_m, g_m = gate_convs(layer.conv_m, m_in, 3)
    c = torch.sigmoid(f_x + f_h + 1.0) * c_prev + torch.sigmoid(i_x + i_h) * torch.tanh(g_x + g_h)
    m = (torch.sigmoid(f_xm + f_m + 1.0) * m_in
         + torch.sigmoid(i_xm + i_m) * torch.tanh(g_xm + g_m))
    (w_cmo,) = gate_convs(layer.conv_cm, torch.cat([c, m], dim=1), 1)   # W_co * C + W_mo * M
    o = torch.sigmoid(o_x + o_h + w_cmo)
    fused = torch.einsum("oi,bithw->bothw", layer.fuse.weight[:, :, 0, 0, 0],
                         torch.cat([c, m], dim=1)) + layer.fuse.bias.view(1, -1, 1, 1, 1)
    return o * torch.tanh(fused), c, m


def random_inputs(config: STAEConfig, batch: int = 2, seed: int = 1):
    """Random latents and random (non-zero) state, float64."""
    generator = torch.Generator().manual_seed(seed)
    latent = (batch, *config.latent_shape)
    latents = Latents(*(torch.randn(latent, generator=generator, dtype=torch.float64)
                        for _ in range(3)))
    state = {name: torch.randn((batch, *shape), generator=generator, dtype=torch.float64)
             for name, shape in cell_class(config).state_shapes(config).items()}
    return latents, state


def seeded_cell(config: STAEConfig, seed: int = 0):
    torch.manual_seed(seed)
    cell = cell_class(config)(config).double().eval()
    with torch.no_grad():   # GroupNorm starts at (1, 0): randomise it so its terms are tested
        for module in cell.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return cell


# ---------------------------------------------------------------- state protocol

@pytest.mark.parametrize("cell, expected", [
    ("convlstm", {"hidden": (3, 8, 2, 8, 8), "cell_state": (3, 8, 2, 8, 8)}),
    ("st_lstm", {"hidden": (3, 8, 2, 8, 8), "temporal_memory": (3, 8, 2, 8, 8),
                 "spatial_memory": (8, 2, 8, 8)}),
])
def test_state_protocol(cell, expected):
    config = config_for(cell)
    spec = io_spec(config)
    shapes = {p.input.name: p.input.shape for p in spec.state}
    assert shapes == {"clip_window": (1, 1, 3, 64, 64),
                      **{name: (1, *shape) for name, shape in expected.items()}}
    assert all(p.output.name == "next_" + p.input.name and p.output.shape == p.input.shape
               for p in spec.state)
    assert state_mispairs(spec) == []                    # Triton's sorted-name pairing holds
    assert isinstance(cell_class(config)(config), {"convlstm": ConvLSTMStack,
                                                   "st_lstm": STLSTMStack}[cell])


# ---------------------------------------------------------------- ConvLSTM equations

def test_convlstm_gate_order_and_forget_bias_with_set_weights():
    """Zero conv weights and biases: each GroupNorm outputs its bias β, so every gate is a known
    constant: i = σ(β_i^x + β_i^h), f = σ(β_f^x + β_f^h + 1), g = tanh(.), o = σ(.)."""
    c = 4
    layer = ConvLSTMLayer(3 * c, c, (3, 3, 3)).double()
    x_beta = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)   # i, f, g, o
    h_beta = torch.tensor([0.1, -0.4, 0.2, 0.6], dtype=torch.float64)
    with torch.no_grad():
        for conv_norm, beta in ((layer.conv_x, x_beta), (layer.conv_h, h_beta)):
            conv_norm.conv.weight.zero_()
            conv_norm.conv.bias.zero_()
            conv_norm.norm.bias.copy_(beta.repeat_interleave(c))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3 * c, 2, 5, 5, generator=generator, dtype=torch.float64)
    h_prev, c_prev = torch.randn(2, 2, c, 2, 5, 5, generator=generator, dtype=torch.float64)
    h, cell = layer(x, h_prev, c_prev)
    pre = x_beta + h_beta
    i, f, g, o = (torch.sigmoid(pre[0]), torch.sigmoid(pre[1] + 1.0), torch.tanh(pre[2]),
                  torch.sigmoid(pre[3]))
    assert torch.allclose(cell, f * c_prev + i * g, rtol=0, atol=1e-14)
    assert torch.allclose(h, o * torch.tanh(f * c_prev + i * g), rtol=0, atol=1e-14)


def test_convlstm_step_equals_the_equations():
    config = config_for("convlstm")
    cell = seeded_cell(config)
    latents, state = random_inputs(config)
    with torch.no_grad():
        top, next_state = cell(latents, state)
        x = torch.cat(latents.streams(), dim=1)                  # layer 0 reads [S, T, O]
        for k, layer in enumerate(cell.layers):
            h, c = convlstm_reference(layer, x, state["hidden"][:, k], state["cell_state"][:, k])
            assert torch.allclose(next_state["hidden"][:, k], h, rtol=0, atol=1e-12), k
            assert torch.allclose(next_state["cell_state"][:, k], c, rtol=0, atol=1e-12), k
            x = h
    assert all(torch.equal(latent, next_state["hidden"][:, -1]) for latent in top)


# ---------------------------------------------------------------- ST-LSTM equations, zig-zag

def test_st_lstm_step_and_zigzag_equal_the_equations():
    """Two steps by hand: each layer's C and M updates, M_in of layer k>0 is M^{k-1}_t, and the
    top layer's M at t is what layer 0 reads at t+1 (hooks on the layers say what they got)."""
    config = config_for("st_lstm")
    cell = seeded_cell(config)
    latents, state = random_inputs(config)
    seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []   # (layer, M in, M out) per call
    for k, layer in enumerate(cell.layers):
        layer.register_forward_hook(
            lambda _m, args, out, k=k: seen.append((k, args[3].clone(), out[2].clone())))
    ref_state = {name: tensor.clone() for name, tensor in state.items()}
    with torch.no_grad():
        for t in range(2):
            top, state = cell(latents, state)
            x, m = torch.cat(latents.streams(), dim=1), ref_state["spatial_memory"]
            hiddens, cells = [], []
            for k, layer in enumerate(cell.layers):
                h, c, m = st_lstm_reference(layer, x, ref_state["hidden"][:, k],
                                            ref_state["temporal_memory"][:, k], m)
                hiddens.append(h)
                cells.append(c)
                x = h
            ref_state = {"hidden": torch.stack(hiddens, 1),
                         "temporal_memory": torch.stack(cells, 1), "spatial_memory": m}
            for name, expected in ref_state.items():
                assert torch.allclose(state[name], expected, rtol=0, atol=1e-12), (t, name)
            assert all(torch.equal(latent, state["hidden"][:, -1]) for latent in top)
            latents = Latents(*(torch.roll(latent, 1, dims=-1) for latent in latents.streams()))
    n = config.layers
    assert [k for k, _, _ in seen] == list(range(n)) * 2
    for call in range(1, 2 * n):
        _, m_in, _ = seen[call]
        _, _, m_out_before = seen[call - 1]      # layer k-1 at t, or layer N-1 at t-1 for k=0
        assert torch.equal(m_in, m_out_before), call
    assert torch.equal(seen[n - 1][2], seen[n][1])          # M^{N-1}_t is layer 0's M at t+1
    assert torch.equal(seen[-1][2], state["spatial_memory"])


# ---------------------------------------------------------------- export, parity, runtime

@pytest.mark.parametrize("cell", CELLS)
def test_fast_formulation_computes_the_reference_step(cell):
    """float64, random state: the time-stacked graph module equals the reference within 1e-12."""
    assert_fast_graph_is_the_reference_step(config_for(cell), cell)


@pytest.fixture(scope="module")
def carphone_64() -> np.ndarray:
    return load_clip("carphone", (64, 64), max_frames=10)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.integration   # exports a model
def test_export_parity_50_steps_and_runtime(cell, tmp_path, carphone_64):
    model = seeded_model(config_for(cell))
    path = tmp_path / f"{cell}.onnx"
    metadata = export_onnx(model, path, random_provenance(model)).metadata   # fast graph (default)
    assert metadata.notes["graph"] == "fast" and metadata.config["cell"] == cell
    assert_export_passes_and_runs(model, path, forward_backward(carphone_64, 50))
