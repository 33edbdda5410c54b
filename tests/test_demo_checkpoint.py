"""The committed demo checkpoint: the file is the one recorded, and it still predicts held-out
frames as well as recorded (a check that the reference, the data pipeline and the weights agree)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from stae_deploy.runtime.files import sha256_file
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.stae_ref.checkpoint import load_checkpoint
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import load_clip

DEMO = Path(__file__).resolve().parents[1] / "stae_ref" / "checkpoints" / "demo"
RECORD = json.loads((DEMO / "checkpoint.json").read_text())


def test_the_file_is_the_recorded_one():
    path = DEMO / RECORD["file"]
    assert path.stat().st_size < 25 * 2 ** 20
    assert sha256_file(path) == RECORD["sha256"]
    model, metadata = load_checkpoint(path)
    assert model.config == STAEConfig.load(DEMO / "model_config.json")
    assert metadata["held_out"] == RECORD["held_out"]


@torch.no_grad()
@pytest.mark.integration   # evaluates the demo checkpoint on held-out footage
def test_held_out_psnr_matches_the_recorded_figure():
    model, _ = load_checkpoint(DEMO / RECORD["file"])
    check = RECORD["check"]
    frames = load_clip(check["clip"], model.config.frame_size)
    state, model_db, copy_db = model.zero_state(), [], []
    for t in range(check["targets"][-1]):
        prediction, state = model.step(torch.from_numpy(frames[t][None]), state)
        if t + 1 in check["targets"]:
            model_db.append(psnr_db(np.clip(prediction[0].numpy(), 0, 1), frames[t + 1]))
            copy_db.append(psnr_db(frames[t], frames[t + 1]))
    assert np.mean(model_db) == pytest.approx(check["model_psnr_db"], abs=0.1)
    assert np.mean(copy_db) == pytest.approx(check["copy_last_psnr_db"], abs=0.01)


@pytest.mark.integration   # a 1000-step rollout
def test_a_long_stream_keeps_the_state_bounded_and_the_gain_flat():
    """300 steps of carphone forward and backward (the figures in eval.json are for 1000)."""
    from stae_deploy.stae_ref.evaluation import long_stream_stability
    from stae_deploy.stae_ref.footage import forward_backward

    model, _ = load_checkpoint(DEMO / RECORD["file"])
    frames = forward_backward(load_clip("carphone", model.config.frame_size), 301)
    with torch.no_grad():
        report = long_stream_stability(model, frames, window=100)
    assert max(report["state_max_abs_per_window"]) <= 1.0
    assert report["state_max_later_over_200_300"] <= 1.1
    recorded = json.loads((DEMO / "eval.json").read_text())["long_stream"]["carphone"]
    np.testing.assert_allclose(report["gain_db_per_window"], recorded["gain_db_per_window"][:3],
                               atol=0.01)
