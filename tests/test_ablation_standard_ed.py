"""The paper's ablation "STAE w/o ED" (Table 3): ``encoder_decoder="shared"``, one
standard encoder and one decoder instead of SE/TE/OE and SD/TD/OD. Config, model structure, the
default left untouched, export (fast and plain) with parity, and the runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.export.time_stacked import TimeStackedSTAE
from stae_deploy.export.to_onnx import ExportSettings, export_onnx
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.cells import Latents
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip
from stae_deploy.stae_ref.layers import Decoder, Encoder

from conftest import (SMALL_CONFIG, assert_export_passes_and_runs, assert_fast_graph_is_the_reference_step, random_provenance, seeded_model)

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "stae_ref/checkpoints/demo/model_config.json"
STANDARD_ED = ROOT / "stae_ref/models/stae_standard_ed.json"

SHARED = STAEConfig.from_dict({**SMALL_CONFIG.to_dict(), "encoder_decoder": "shared"})
# Every option that changes the structure around the encoders and decoders.
SHARED_TINY = STAEConfig(frame_size=(32, 32), patch=4, stride2_stages=1, hidden=8, layers=2,
                         tau=3, kernel=(3, 3, 3), cell="stam_bounded", head="residual",
                         decoder_skip=True, encoder_decoder="shared")
# SMALL_CONFIG's parameter names and count before encoder_decoder existed (git 93c8ff4).
SMALL_PARAMS_BEFORE = 131_418
TOP_LEVEL_BEFORE = ["spatial_encoder", "temporal_encoder", "output_encoder", "cell",
                    "spatial_decoder", "temporal_decoder", "output_decoder", "frame_fuse",
                    "time_collapse"]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count(model: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# ---------------------------------------------------------------- config

def test_config_round_trip_default_and_old_configs():
    assert STAEConfig().encoder_decoder == "separate"
    assert SHARED.to_dict()["encoder_decoder"] == "shared"
    assert STAEConfig.from_json(SHARED.to_json()) == SHARED
    assert STAEConfig.from_dict(SHARED.to_dict()) == SHARED
    old = SMALL_CONFIG.to_dict()
    del old["encoder_decoder"]                        # a config written before the field existed
    assert STAEConfig.from_dict(old).encoder_decoder == "separate"
    assert STAEConfig.from_dict(old) == SMALL_CONFIG


def test_standard_ed_model_file_is_the_demo_config_with_shared_encoder_decoder():
    demo = json.loads(DEMO_CONFIG.read_text())
    assert "encoder_decoder" not in demo or demo["encoder_decoder"] == "separate"
    assert STAEConfig.load(STANDARD_ED) == STAEConfig.from_dict(
        {**demo, "encoder_decoder": "shared"})


@pytest.mark.parametrize("value", ["standard", "", None, ["shared"], True])
def test_bad_encoder_decoder_names_the_field(value):
    with pytest.raises(ConfigError, match=r"encoder_decoder: expected one of .*separate.*shared"):
        STAEConfig(encoder_decoder=value)


# ---------------------------------------------------------------- the model

def test_shared_model_has_one_encoder_and_one_decoder_and_no_eq8_fusion():
    separate, shared = seeded_model(SMALL_CONFIG), seeded_model(SHARED)
    assert (count(separate, Encoder), count(separate, Decoder)) == (3, 3)
    assert (count(shared, Encoder), count(shared, Decoder)) == (1, 1)
    assert [name for name, _ in shared.named_children()] == [
        "output_encoder", "cell", "output_decoder", "time_collapse"]
    # Exactly two encoders, two decoders and eq. (8)'s 1x1x1 conv (6 -> 3 channels) fewer.
    dropped = (2 * parameter_count(separate.spatial_encoder)
               + 2 * parameter_count(separate.spatial_decoder) + 6 * 3 + 3)
    assert parameter_count(shared) == parameter_count(separate) - dropped
    assert parameter_count(shared.cell) == parameter_count(separate.cell)


def test_shared_model_feeds_one_latent_to_all_three_cell_inputs_and_steps():
    model = seeded_model(SHARED)
    seen: list[Latents] = []
    model.cell.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    state = model.zero_state()
    frame = torch.from_numpy(load_clip("carphone", (64, 64), max_frames=1)[:1])
    with torch.no_grad():
        prediction, next_state = model.step(frame, state)
        encoded = model.output_encoder(_stem(model, frame))
    assert seen[0].spatial is seen[0].temporal is seen[0].output
    assert torch.equal(seen[0].output, encoded)
    assert prediction.shape == (1, 3, 64, 64) and torch.isfinite(prediction).all()
    assert set(next_state) == set(state)
    assert any(float(next_state[k].abs().max()) > 0 for k in next_state if k != "clip_window")


def _stem(model, frame: torch.Tensor) -> torch.Tensor:
    """The space-to-depth clip the encoders read on the first step (zero history)."""
    from stae_deploy.stae_ref.layers import space_to_depth

    clip = torch.cat([torch.zeros_like(frame).unsqueeze(1)] * (model.config.clip_len - 1)
                     + [frame.unsqueeze(1)], dim=1)
    return space_to_depth(clip.transpose(1, 2), model.config.patch)


def test_default_model_is_unchanged():
    """The default ("separate") builds the same modules, in the same order, with the same seeded
    weights, as before the option existed."""
    default = seeded_model(SMALL_CONFIG)
    explicit = seeded_model(STAEConfig.from_dict(
        {**SMALL_CONFIG.to_dict(), "encoder_decoder": "separate"}))
    assert [name for name, _ in default.named_children()] == TOP_LEVEL_BEFORE
    assert parameter_count(default) == SMALL_PARAMS_BEFORE
    a, b = default.state_dict(), explicit.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- export and runtime

@pytest.mark.parametrize("config", [SHARED, SHARED_TINY], ids=["small", "bounded-residual-skip"])
def test_fast_formulation_computes_the_shared_reference_step(config):
    """float64, random state: the time-stacked module equals the reference within 1e-12, with the
    reference's module paths."""
    reference = seeded_model(config).double()
    fast = TimeStackedSTAE(reference).double().eval()
    assert [name for name, _ in fast.named_children()] == [
        "output_encoder", "cell", "output_decoder", "time_collapse"]
    assert_fast_graph_is_the_reference_step(config, "shared")


@pytest.fixture(scope="module")
def carphone_64() -> np.ndarray:
    return load_clip("carphone", (64, 64), max_frames=10)


@pytest.mark.parametrize("graph", ["fast", "plain"])
@pytest.mark.integration   # exports a model
def test_export_parity_50_steps_and_runtime(graph, tmp_path, carphone_64):
    model = seeded_model(SHARED)
    path = tmp_path / f"shared_{graph}.onnx"
    metadata = export_onnx(model, path, random_provenance(model), ExportSettings(graph=graph)).metadata
    assert metadata.notes["graph"] == graph
    assert metadata.config["encoder_decoder"] == "shared"
    # The one encoder and decoder land in the INT8 node groups like OE and OD do.
    groups = group_nodes(onnx.load(str(path)))
    assert {"encoders", "decoders", "to_pixels", "head"} <= set(groups), sorted(groups)
    assert "other_convs" not in groups

    assert_export_passes_and_runs(model, path, forward_backward(carphone_64, 50))
