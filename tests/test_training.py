"""Training and evaluation on real footage: held-out frames stay out of training, runs are
deterministic and resume exactly, and the evaluation scores the model against copy-last."""
import json

import numpy as np
import pytest
import torch

from stae_deploy.runtime.errors import CheckpointError, ConfigError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.stae_ref.footage import CLIPS
from stae_deploy.runtime.metrics import psnr_db, ssim
from stae_deploy.stae_ref.checkpoint import load_checkpoint, save_checkpoint
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.evaluation import evaluate
from stae_deploy.stae_ref.train import TrainConfig, train, training_loss, update_average
from stae_deploy.stae_ref.training_data import SequenceSampler, Shots, split_clips

from conftest import seeded_model

TINY = STAEConfig(frame_size=(32, 32), patch=4, stride2_stages=1, hidden=4, layers=1, tau=2,
                  kernel=(1, 3, 3), head="residual")


def tiny_training(**overrides) -> TrainConfig:
    values = dict(model=TINY, clips=("carphone",), iterations=4, batch=2, steps=3, crop=16,
                  val_every=2, seed=3)
    return TrainConfig(**{**values, **overrides})


def marked_frames(count: int, size: int = 32) -> np.ndarray:
    """uint8 (count, size, size, 3) frames; frame t holds the value t everywhere."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None],
                           (count, size, size, 3)).copy()


def sampled_frame_values(sampler: SequenceSampler, draws: int = 200) -> np.ndarray:
    """The frame index of every sampled frame, (draws * B, S + 1)."""
    rng = np.random.default_rng(0)
    return np.concatenate([np.rint(sampler.sample(rng, 8)[:, :, 0, 0, 0] * 255)
                           for _ in range(draws)]).astype(int)


def test_held_out_frames_are_never_sampled():
    sampler = SequenceSampler([Shots("marked", marked_frames(40), ((0, 30),))], steps=5, crop=16)
    seen = sampled_frame_values(sampler)
    assert seen.max() == 29 and seen.min() == 0                      # reaches both ends, not past


def test_no_training_sequence_straddles_a_cut():
    shots = Shots("cut", marked_frames(60), ((0, 20), (20, 45)))     # a cut at frame 20
    seen = sampled_frame_values(SequenceSampler([shots], steps=5, crop=16))
    in_first = seen.max(axis=1) < 20
    assert in_first.any() and (~in_first).any(), "both shots are sampled"
    assert (seen[~in_first].min(axis=1) >= 20).all(), "a sequence crossed the cut at frame 20"
    assert seen.max() == 44


def test_paused_sequences_repeat_one_frame_from_a_random_step_on():
    shots = [Shots("marked", marked_frames(40), ((0, 30),))]
    rng = np.random.default_rng(0)
    moving = np.rint(SequenceSampler(shots, steps=6, crop=16).sample(rng, 64)[:, :, 0, 0, 0] * 255)
    assert (np.abs(np.diff(moving, axis=1)) == 1).all(), "no pause without pause_probability"
    paused = SequenceSampler(shots, steps=6, crop=16, pause_probability=1.0).sample(rng, 64)
    values = np.rint(paused[:, :, 0, 0, 0] * 255)
    pause_starts = [int(np.argmax(np.diff(v) == 0)) + 1 for v in values]
    for v, start in zip(values, pause_starts):
        assert 2 <= start <= 6 and (v[start:] == v[start - 1]).all(), v
        assert (np.abs(np.diff(v[:start])) == 1).all(), f"moves until the pause: {v}"
    assert set(pause_starts) == {2, 3, 4, 5, 6}
    with pytest.raises(ConfigError, match="pause_probability: expected in"):
        SequenceSampler(shots, steps=6, crop=16, pause_probability=1.5)


def test_split_matches_the_clip_lengths():
    city, carphone = split_clips(("city", "carphone"), (32, 32), 0.2)
    assert (len(city.frames), city.holdout_start) == (116, 93)
    assert (len(carphone.frames), carphone.holdout_start) == (120, 96)


@pytest.mark.parametrize("overrides, message", [
    ({"crop": 20}, "crop: 20 is not a multiple of the model's total stride 8"),
    ({"iterations": 0}, "iterations"),
    ({"lr_min": 1.0}, "lr/lr_min"),
    ({"loss": "l1"}, r"loss: expected one of \('mse', 'psnr'\), got 'l1'"),
    ({"ema_decay": 1.0}, r"ema_decay: expected None or in \(0, 1\), got 1.0"),
    ({"pause_probability": -0.1}, r"pause_probability: expected in \[0, 1\]"),
])
def test_bad_training_options_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_training(**overrides)


def test_psnr_loss_is_minus_the_mean_per_frame_psnr_and_mse_is_the_papers():
    generator = torch.Generator().manual_seed(0)
    targets = torch.rand(2, 3, 3, 16, 16, generator=generator)
    noise = torch.tensor([0.01, 0.1]).view(2, 1, 1, 1, 1)
    predictions = targets + noise * torch.randn(2, 3, 3, 16, 16, generator=generator)
    frame_psnr = [psnr_db(predictions[b, s].numpy(), targets[b, s].numpy())
                  for b in range(2) for s in range(3)]
    floored_psnr = [-10 * np.log10(10 ** (-p / 10) + 1e-5) for p in frame_psnr]   # 50 dB floor
    assert training_loss("psnr", predictions, targets).item() == pytest.approx(
        -np.mean(floored_psnr), abs=1e-3)
    assert training_loss("mse", predictions, targets).item() == pytest.approx(
        ((predictions - targets) ** 2).mean().item())


def test_training_config_round_trips():
    config = tiny_training()
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.integration   # trains
def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    straight = train(tiny_training(), tmp_path / "a", progress=False)
    assert train(tiny_training(), tmp_path / "b", progress=False, stop_after=2) is None
    resumed = train(tiny_training(), tmp_path / "b", resume=True, progress=False)
    again = train(tiny_training(), tmp_path / "c", progress=False)
    weights = [load_checkpoint(path)[0].state_dict() for path in (straight, resumed, again)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), f"resumed run differs: {name}"
        assert torch.equal(weights[0][name], weights[2][name]), f"same seed differs: {name}"
    _, metadata = load_checkpoint(straight)
    assert metadata["train_config"] == tiny_training().to_dict() and metadata["seed"] == 3
    assert [entry["iteration"] for entry in metadata["log"]] == [2, 4]
    assert metadata["held_out"] == {"carphone": [96, 120]}


@pytest.mark.integration   # trains
def test_an_averaged_run_saves_the_moving_average_of_its_weights(tmp_path):
    config = tiny_training(ema_decay=0.5)
    final = train(config, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    saved = load_checkpoint(final)[0].state_dict()
    for name, tensor in saved.items():
        assert torch.equal(tensor, state["averaged_model"][name]), name
    assert any(not torch.equal(saved[n], state["model"][n]) for n in saved), \
        "the averaged weights are not the last iteration's"
    resumed = tmp_path / "resumed"
    train(config, resumed, progress=False, stop_after=2)
    again = load_checkpoint(train(config, resumed, resume=True, progress=False))[0].state_dict()
    for name, tensor in saved.items():
        assert torch.equal(tensor, again[name]), f"a resumed averaged run differs: {name}"


def test_the_moving_average_update():
    averaged, current = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = averaged.weight.detach().clone()
    update_average(averaged, current, 0.75)
    torch.testing.assert_close(averaged.weight, 0.75 * before + 0.25 * current.weight)


@pytest.mark.integration   # trains
def test_a_run_can_start_from_another_checkpoints_weights(tmp_path):
    from dataclasses import replace

    first = train(tiny_training(iterations=2), tmp_path / "first", progress=False)
    bounded = replace(TINY, cell="stam_bounded")            # same parameters, other update
    config = tiny_training(model=bounded, iterations=1, lr=1e-12, lr_min=1e-12,
                           init_from=str(first))
    second = train(config, tmp_path / "second", progress=False)
    start, _ = load_checkpoint(first)
    result, metadata = load_checkpoint(second)
    for name, tensor in start.state_dict().items():
        torch.testing.assert_close(result.state_dict()[name], tensor, atol=1e-6, rtol=0)
    assert metadata["init_from_sha256"] == sha256_file(first)
    wider = tiny_training(model=replace(TINY, hidden=8), init_from=str(first))
    with pytest.raises(CheckpointError, match=r"init_from .*: parameter '.*' is \(.*\), the model "
                                              r"to train needs"):
        train(wider, tmp_path / "third", progress=False)


@pytest.mark.integration   # trains
def test_a_finished_run_is_not_overwritten(tmp_path):
    train(tiny_training(iterations=2), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(tiny_training(iterations=2), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="started with another config"):
        train(tiny_training(iterations=3), tmp_path / "run", resume=True, progress=False)


@pytest.mark.integration   # evaluates over held-out footage
def test_untrained_residual_model_scores_exactly_copy_last(capsys, tmp_path):
    """A zero-initialised residual head *is* copy-last: the evaluation must say so."""
    model = seeded_model(TINY)
    splits = split_clips(("carphone",), (32, 32), 0.2)
    report = evaluate(model, splits, horizons=2)
    clip = report["per_clip"]["carphone"]
    assert clip["held_out_targets"] == 24 and clip["gain_db"] == 0.0
    assert report["model_psnr_db"] == report["copy_last_psnr_db"]
    assert [h["horizon"] for h in report["horizon_psnr_db"]] == [1, 2]
    assert report["horizon_psnr_db"][0]["model"] == report["horizon_psnr_db"][0]["copy_last"]
    assert report["horizon_psnr_db"][1]["copy_last"] < report["horizon_psnr_db"][0]["copy_last"]

    from stae_deploy.cli.main import main

    save_checkpoint(model, tmp_path / "tiny.pt")
    assert main(["eval", str(tmp_path / "tiny.pt"), "--clips", "carphone", "--horizons", "2",
                 "--json", "--plot", str(tmp_path / "eval.png")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) >= {"model_psnr_db", "copy_last_psnr_db", "per_clip", "horizon_psnr_db"}
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_ssim_is_one_for_identical_frames_and_falls_with_noise(carphone_128):
    frame = carphone_128[10]
    noisy = np.clip(frame + np.random.default_rng(0).normal(0, 0.05, frame.shape), 0, 1)
    noisier = np.clip(frame + np.random.default_rng(0).normal(0, 0.15, frame.shape), 0, 1)
    assert ssim(frame, frame) == pytest.approx(1.0)
    assert 0 < ssim(noisier, frame) < ssim(noisy, frame) < 1
    assert ssim(noisy, frame) == pytest.approx(ssim(frame, noisy.astype(np.float32)), abs=1e-6)


def test_long_stream_report_per_window():
    from stae_deploy.stae_ref.evaluation import long_stream_stability
    from stae_deploy.stae_ref.footage import forward_backward

    frames = forward_backward(split_clips(("carphone",), (32, 32), 0.2)[0].frames, 301)
    report = long_stream_stability(seeded_model(TINY), frames, window=100)
    assert report["steps"] == 300 and len(report["state_max_abs_per_window"]) == 3
    assert report["gain_db_per_window"] == [0.0, 0.0, 0.0]       # untrained residual == copy-last
    assert all(v > 0 for v in report["state_max_abs_per_window"])
    windows = report["state_max_abs_per_window"]
    assert report["state_max_later_over_200_300"] == pytest.approx(windows[2] / windows[2], abs=1e-4)
    assert report["gain_slope_db_per_100_steps"] == 0.0


@pytest.mark.integration   # trains
def test_a_run_mixes_synthetic_motion_and_records_what_it_trained_on(tmp_path):
    config = tiny_training(iterations=2, synthetic_fraction=0.5)
    final = train(config, tmp_path / "run", progress=False)
    _, metadata = load_checkpoint(final)
    [record] = metadata["trained_on"]
    assert record["name"] == "carphone" and record["sha256"] == CLIPS["carphone"].sha256
    assert record["held_out"] == [96, 120] and record["train_ranges"] == [[0, 96]]
    assert metadata["train_config"]["synthetic_fraction"] == 0.5
    assert (tmp_path / "run" / "training.png").stat().st_size > 0


def test_a_time_budget_drives_the_schedule_and_ends_the_run():
    config = tiny_training(iterations=1000, minutes=1.0)
    assert config.progress(10, elapsed_s=30.0) == 0.5           # time is further along
    assert config.progress(900, elapsed_s=6.0) == 0.9           # iterations are
    assert config.lr_at(0, 60.0) == pytest.approx(config.lr_min)
    with pytest.raises(ConfigError, match="minutes: expected None or > 0"):
        tiny_training(minutes=0)
    with pytest.raises(ConfigError, match="clips/videos: nothing to train on"):
        tiny_training(clips=())
