"""Checkpoints carry their config, reload bit-exactly, and bad files give clear errors."""
import pytest
import torch

from stae_deploy.runtime.errors import CheckpointError, OutputExistsError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.stae_ref.checkpoint import load_checkpoint, save_checkpoint
from stae_deploy.stae_ref.config import STAEConfig


@pytest.mark.integration   # rollouts of two models
def test_round_trip_gives_the_same_predictions(small_model, tmp_path):
    path = tmp_path / "small.pt"
    digest = save_checkpoint(small_model, path, metadata={"seed": 0})
    assert digest == sha256_file(path)
    model, metadata = load_checkpoint(path)
    assert model.config == small_model.config and metadata == {"seed": 0}
    frames = torch.rand(1, 3, 3, 64, 64)
    with torch.no_grad():
        expected = small_model.rollout(frames, horizon=2).forecast
        assert torch.equal(model.rollout(frames, horizon=2).forecast, expected)


def test_existing_files_are_not_overwritten(small_model, tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        save_checkpoint(small_model, path)
    assert path.read_text() == "mine"
    save_checkpoint(small_model, path, force=True)
    assert load_checkpoint(path)[0].config == small_model.config


def test_truncated_foreign_and_missing_files(small_model, tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(small_model, path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated.pt: cannot be read"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": 1}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not a stae-deploy checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="nothere.pt: no such file"):
        load_checkpoint(tmp_path / "nothere.pt")


def test_weights_that_do_not_match_the_config(small_model, tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(small_model, path)
    payload = torch.load(path, weights_only=True)
    payload["config"] = STAEConfig(frame_size=(64, 64), patch=4, stride2_stages=1, hidden=8,
                                   layers=2, tau=3, kernel=(3, 3, 3)).to_dict()
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"do not match.*unexpected \['cell.layers.2"):
        load_checkpoint(path)
