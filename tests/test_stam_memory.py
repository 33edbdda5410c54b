"""STAM's memories: the attention formula, and the rings holding the real last tau states.

ATT(F, X) = Σ_j softmax_j(F ⊙ X_j) ⊙ X_j per element. The temporal ring of layer n holds that
layer's last min(k, tau) cell states after k steps (zeros before, newest last); the spatial ring
holds the last tau spatial states in zig-zag order: layer 1..N of step 1, then of step 2, ...
"""
import numpy as np
import pytest
import torch

from stae_deploy.stae_ref.cells.stam import STAMLayer, memory_attention


def hand_attention(forget_gate: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """The formula computed element by element in float64."""
    out = np.zeros(forget_gate.shape)
    for index in np.ndindex(*forget_gate.shape):
        b, rest = index[0], index[1:]
        slots = [ring[(b, j) + rest] for j in range(ring.shape[1])]
        scores = [forget_gate[index] * x for x in slots]
        exps = [np.exp(s - max(scores)) for s in scores]
        out[index] = sum(e / sum(exps) * x for e, x in zip(exps, slots))
    return out


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_attention_equals_a_hand_computation(dtype, atol):
    generator = torch.Generator().manual_seed(3)
    forget_gate = torch.rand(2, 3, 2, 3, 4, generator=generator, dtype=dtype)   # (B, C, T, h, w)
    ring = torch.randn(2, 5, 3, 2, 3, 4, generator=generator, dtype=dtype)      # (B, tau, C, T, h, w)
    got = memory_attention(forget_gate, ring).double().numpy()
    expected = hand_attention(forget_gate.double().numpy(), ring.double().numpy())
    np.testing.assert_allclose(got, expected, atol=atol, rtol=0)


def test_attention_over_a_zero_ring_is_zero_and_over_equal_slots_is_that_slot():
    gate = torch.rand(1, 2, 2, 3, 3)
    assert not memory_attention(gate, torch.zeros(1, 4, 2, 2, 3, 3)).any()
    slot = torch.randn(1, 2, 2, 3, 3)
    torch.testing.assert_close(memory_attention(gate, slot[:, None].expand(1, 4, 2, 2, 3, 3)),
                               slot, atol=1e-6, rtol=0)


@pytest.fixture
def recorded_rollout(small_model):
    """Run 7 steps (tau = 3) recording every layer's C and M as the layers compute them."""
    records = []          # (step, layer, cell C^k_t, spatial M^{Nt+k}) in call order
    layers = [m for m in small_model.modules() if isinstance(m, STAMLayer)]
    step = {"t": 0}

    def hook(module, _inputs, outputs):
        _, cell, spatial, _ = outputs
        records.append((step["t"], layers.index(module), cell.clone(), spatial.clone()))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    states = []
    state = small_model.zero_state()
    frames = torch.rand(7, 1, 3, 64, 64)
    with torch.no_grad():
        for t in range(7):
            step["t"] = t
            _, state = small_model.step(frames[t], state)
            states.append(state)
    for handle in handles:
        handle.remove()
    return records, states


def test_temporal_ring_holds_each_layers_last_tau_cell_states(small_model, recorded_rollout):
    records, states = recorded_rollout
    tau, layers = small_model.config.tau, small_model.config.layers
    checked = 0
    for k, state in enumerate(states, start=1):
        for n in range(layers):
            history = [cell for t, layer, cell, _ in records if layer == n and t < k]
            ring = state["temporal_ring"][:, n]                      # (B, tau, C, T, h, w)
            kept = min(k, tau)
            for slot in range(tau - kept):
                assert not ring[:, slot].any(), f"step {k} layer {n} slot {slot} is not zero"
            for slot, cell in zip(range(tau - kept, tau), history[-kept:]):
                assert torch.equal(ring[:, slot], cell), f"step {k} layer {n} slot {slot}"
                checked += 1
    assert checked == sum(min(k, tau) for k in range(1, 8)) * layers


def test_spatial_ring_holds_the_last_tau_spatial_states_in_zigzag_order(small_model,
                                                                      recorded_rollout):
    records, states = recorded_rollout
    tau = small_model.config.tau
    checked = 0
    for k, state in enumerate(states, start=1):
        zigzag = [spatial for t, _, _, spatial in records if t < k]   # (t, layer) order
        assert len(zigzag) == k * small_model.config.layers
        ring = state["spatial_ring"]
        for slot, spatial in zip(range(tau), zigzag[-tau:]):
            assert torch.equal(ring[:, slot], spatial), f"step {k} slot {slot}"
            checked += 1
    assert checked == tau * len(states)


def test_hidden_state_is_each_layers_output(small_model):
    layers = [m for m in small_model.modules() if isinstance(m, STAMLayer)]
    outputs = []
    handles = [layer.register_forward_hook(lambda m, i, o: outputs.append(o[0])) for layer in layers]
    with torch.no_grad():
        _, state = small_model.step(torch.rand(1, 3, 64, 64), small_model.zero_state())
    for handle in handles:
        handle.remove()
    for n, hidden in enumerate(outputs):
        assert torch.equal(state["hidden"][:, n], hidden), f"layer {n}"


def max_memory_over_stream(cell: str, steps: int) -> float:
    """max |state| over ``steps`` steps of loud random frames, recurrent weights scaled x4, and a
    gate bias that holds the forget gate near 1 (what a model trained on short sequences learns)."""
    from dataclasses import replace

    from conftest import SMALL_CONFIG, seeded_model

    model = seeded_model(replace(SMALL_CONFIG, cell=cell))
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, STAMLayer):
                for conv in layer.modules():
                    if isinstance(conv, torch.nn.Conv3d):
                        conv.weight.mul_(4.0)
                channels = layer.fuse.out_channels           # conv_h gives i, g, f, o
                layer.conv_h.norm.bias[2 * channels:3 * channels] += 6.0
        generator = torch.Generator().manual_seed(0)
        state, largest = model.zero_state(), 0.0
        for _ in range(steps):
            _, state = model.step(3 * torch.rand(1, 3, 64, 64, generator=generator), state)
            largest = max(largest, *(state[name].abs().max().item()
                                     for name in ("hidden", "temporal_ring", "spatial_ring")))
    return largest


def test_bounded_cell_keeps_every_memory_inside_unit_range_on_any_stream():
    assert max_memory_over_stream("stam_bounded", 150) < 1.0


def test_the_papers_memory_update_is_not_bounded_under_the_same_stream():
    assert max_memory_over_stream("stam", 150) > 5.0, \
        "the unbounded update should grow here; otherwise the bound test proves nothing"
