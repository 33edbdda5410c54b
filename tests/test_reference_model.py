"""The STAE reference: shapes, resolution independence, gradients, closed-loop rollout, errors."""
import pytest
import torch

from stae_deploy.runtime.errors import FrameFormatError
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model import STAE

from conftest import seeded_model


@pytest.mark.parametrize("size, latent", [(256, (64, 2, 8, 8)), (512, (64, 2, 16, 16))])
def test_default_config_shapes(default_model, size, latent):
    """One set of weights (the fixture) at both sizes; state shapes come from the protocol."""
    state = default_model.zero_state(1, (size, size))
    with torch.no_grad():
        prediction, next_state = default_model.step(torch.rand(1, 3, size, size), state)
    assert prediction.shape == (1, 3, size, size)
    spec = default_model.spec((size, size))
    for pair in spec.state:
        assert tuple(next_state[pair.input.name].shape) == pair.output.shape, pair.input.name
    assert tuple(next_state["hidden"].shape[2:]) == latent
    assert torch.isfinite(prediction).all()


def test_weights_do_not_depend_on_the_frame_size():
    shapes_256 = {k: v.shape for k, v in STAE(STAEConfig(frame_size=(256, 256))).state_dict().items()}
    shapes_512 = {k: v.shape for k, v in STAE(STAEConfig(frame_size=(512, 512))).state_dict().items()}
    assert shapes_256 == shapes_512


def test_batch_elements_are_independent(small_model):
    """Normalisation is per sample: a sample's prediction does not depend on its batch mates."""
    frames = torch.rand(3, 2, 3, 64, 64)
    with torch.no_grad():
        batched = small_model.rollout(frames, horizon=2)
        single = small_model.rollout(frames[1:2], horizon=2)
    torch.testing.assert_close(batched.forecast[1:2], single.forecast, atol=1e-5, rtol=0)


def test_every_parameter_gets_a_gradient_from_a_three_step_rollout():
    model = seeded_model(STAEConfig(frame_size=(256, 256))).train()
    frames = torch.rand(1, 4, 3, 256, 256)
    rollout = model.rollout(frames[:, :3], horizon=1)
    predictions = torch.cat([rollout.warmup_predictions, rollout.forecast], dim=1)
    torch.nn.functional.mse_loss(predictions, frames[:, 1:]).backward()
    without = [name for name, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert without == []


def test_residual_head_starts_at_copy_last_frame():
    model = seeded_model(STAEConfig(frame_size=(64, 64), patch=4, stride2_stages=1, hidden=8,
                                    layers=2, head="residual"))
    frames = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        rollout = model.rollout(frames, horizon=1)
    torch.testing.assert_close(rollout.warmup_predictions, frames[:, :2], atol=0, rtol=0)
    torch.testing.assert_close(rollout.forecast[:, 0], frames[:, 2], atol=0, rtol=0)


def test_rollout_is_step_by_step_and_closes_the_loop(small_model):
    frames = torch.rand(1, 4, 3, 64, 64)
    with torch.no_grad():
        rollout = small_model.rollout(frames, horizon=3)
        state = small_model.zero_state()
        steps = []
        for t in range(4):
            prediction, state = small_model.step(frames[:, t], state)
            steps.append(prediction)
        for _ in range(2):
            prediction, state = small_model.step(steps[-1], state)
            steps.append(prediction)
    assert rollout.warmup_predictions.shape == (1, 3, 3, 64, 64)
    assert rollout.forecast.shape == (1, 3, 3, 64, 64)
    torch.testing.assert_close(rollout.warmup_predictions, torch.stack(steps[:3], 1), atol=0, rtol=0)
    torch.testing.assert_close(rollout.forecast, torch.stack(steps[3:], 1), atol=0, rtol=0)
    for name in state:
        torch.testing.assert_close(rollout.state[name], state[name], atol=0, rtol=0)


def test_clip_window_holds_the_previous_frame(small_model):
    frames = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        _, state = small_model.step(frames[:, 0], small_model.zero_state())
        assert torch.equal(state["clip_window"][:, 0], frames[:, 0])
        _, state = small_model.step(frames[:, 1], state)
        assert torch.equal(state["clip_window"][:, 0], frames[:, 1])


def test_forward_is_step_in_protocol_order(small_model):
    """The positional export signature computes exactly what step() computes."""
    frame = torch.rand(1, 3, 64, 64)
    state = {k: torch.rand_like(v) for k, v in small_model.zero_state().items()}
    with torch.no_grad():
        prediction, next_state = small_model.step(frame, state)
        outputs = small_model(frame, *state.values())
    spec = small_model.spec()
    assert len(outputs) == len(spec.outputs)
    assert torch.equal(outputs[0], prediction)
    for pair, tensor in zip(spec.state, outputs[1:]):
        assert torch.equal(tensor, next_state[pair.input.name]), pair.output.name


@pytest.mark.parametrize("frame, message", [
    (torch.rand(1, 3, 60, 64), r"'frame': frame size 60x64 is not a multiple of the total stride 8"),
    (torch.rand(1, 4, 64, 64), r"'frame': got shape \(1, 4, 64, 64\), expected \(B, 3, H, W\)"),
    (torch.rand(3, 64, 64), r"'frame': got shape \(3, 64, 64\)"),
    (torch.rand(1, 3, 64, 64, dtype=torch.float64), r"'frame': got dtype float64"),
])
def test_wrong_frames_name_the_tensor(small_model, frame, message):
    with pytest.raises(FrameFormatError, match=message):
        small_model.step(frame, small_model.zero_state())


def test_wrong_state_names_the_tensor(small_model):
    frame = torch.rand(1, 3, 64, 64)
    state = small_model.zero_state()
    bad = dict(state, temporal_ring=state["temporal_ring"][:, :, 1:])
    with pytest.raises(FrameFormatError, match=r"'temporal_ring': got shape \(1, 3, 2, 8, 2, 8, 8\)"):
        small_model.step(frame, bad)
    with pytest.raises(FrameFormatError, match=r"state: expected tensors .*'spatial_ring'"):
        small_model.step(frame, {k: v for k, v in state.items() if k != "spatial_ring"})
    with pytest.raises(FrameFormatError, match=r"'hidden': got shape \(1, 3, 8, 2, 16, 16\)"):
        small_model.step(frame, dict(state, hidden=small_model.zero_state(1, (128, 128))["hidden"]))



def test_decoder_skip_feeds_the_input_clip_to_every_decoder():
    import dataclasses

    from conftest import SMALL_CONFIG

    config = dataclasses.replace(SMALL_CONFIG, decoder_skip=True)
    model = seeded_model(config).train()
    stem_channels = 3 * config.patch ** 2
    for decoder in (model.spatial_decoder, model.temporal_decoder, model.output_decoder):
        assert decoder.to_pixels.in_channels == config.decoder_channels[-1] + stem_channels
    frames = torch.rand(1, 4, 3, 64, 64)
    rollout = model.rollout(frames[:, :3], horizon=1)
    predictions = torch.cat([rollout.warmup_predictions, rollout.forecast], dim=1)
    torch.nn.functional.mse_loss(predictions, frames[:, 1:]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
