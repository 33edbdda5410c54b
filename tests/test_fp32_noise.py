"""FP32 step-1 bounds grounded in measured FP32 noise: the shipped model exported above
its training size passes, and a graph with one conv weight off by 0.1% still fails."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from stae_deploy.export.onnx_graph import save_model
from stae_deploy.verify.parity import TOLERANCES, TorchReference, fp32_noise, lane_sum
from stae_deploy.stae_ref.checkpoint import load_checkpoint
from stae_deploy.stae_ref.footage import load_clip

CHECKPOINT = Path(__file__).resolve().parents[1] / "stae_ref/checkpoints/demo/stae_demo.pt"
# 1x1 conv of STAM's last layer, eq. (6): no normalisation after it, so x1.001 reaches next_hidden.
FUSE_WEIGHT = "cell.layers.1.fuse.weight"


def test_lane_sum_is_a_float32_running_sum_per_lane():
    x = np.random.default_rng(0).random((2, 1003)).astype(np.float32)
    expected = np.zeros((2, 1), np.float32)
    lanes = np.zeros((2, 8), np.float32)
    for i in range(x.shape[1]):
        lanes[:, i % 8] += x[:, i]
    for lane in range(8):
        expected[:, 0] += lanes[:, lane]
    assert np.array_equal(lane_sum(x), expected)
    assert lane_sum(x).dtype == np.float32
    np.testing.assert_allclose(lane_sum(x, 1)[:, 0], x.astype(np.float64).sum(1), rtol=1e-5)


def test_fp32_variants_are_the_same_step_up_to_rounding():
    model, _ = load_checkpoint(CHECKPOINT)
    model.config = model.config.with_frame_size((64, 64))
    reference = TorchReference(model.eval())
    frame = load_clip("city", (64, 64), max_frames=1)[:1]
    noise = fp32_noise(reference, model.spec(), frame, reference.zero_state())
    assert noise["next_clip_window"] == 0.0                         # a copy has no noise
    assert 0 < noise["next_spatial_ring"] < 1e-4, noise
    assert not any(isinstance(m, torch.nn.GroupNorm) and m._forward_hooks
                   for m in model.modules())                         # hooks removed


def _export(tmp_path, size: int) -> Path:
    from stae_deploy.cli.main import main

    path = tmp_path / f"demo{size}.onnx"
    assert main(["export", "--checkpoint", str(CHECKPOINT), "--frame-size", str(size), "-o",
                 str(path), "--no-check"]) == 0
    return path


def _scaled(path: Path, initializer: str, factor: float) -> Path:
    model = onnx.load(str(path))
    (tensor,) = [t for t in model.graph.initializer if t.name == initializer]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(factor),
                                            tensor.name))
    # save_model records the edited graph's checksum: a well-formed model, numerically off
    return save_model(model, path.with_name(path.stem + "_broken.onnx")).path


def _check_json(path: Path, capsys, steps: int = 2) -> tuple[int, dict]:
    from stae_deploy.cli.main import main

    code = main(["check", str(path), "--checkpoint", str(CHECKPOINT), "--steps", str(steps),
                 "--horizon", "1", "--json", "--quiet"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.integration   # exports and checks the demo model
def test_demo_at_64_passes_and_a_scaled_conv_weight_fails(tmp_path, capsys):
    path = _export(tmp_path, 64)
    code, report = _check_json(path, capsys)
    assert code == 0 and report["passed"], report["failures"]
    limits = report["step1_limits"]
    assert set(limits) == set(report["step1_max_rel"])
    for tensor, entry in limits.items():
        assert entry["limit"] == report["tolerances"]["per_tensor"][tensor]
        assert entry["limit"] >= TOLERANCES["fp32"].step1_max_rel
        assert entry["source"] in {"floor", "fp32 noise x 4"}
        assert entry["fp32_noise"] is not None
    assert report["tolerances"]["noise_factor"] == 4.0
    assert report["tolerances"]["pred_psnr_db_min"] == 60.0

    code, report = _check_json(_scaled(path, FUSE_WEIGHT, 1.001), capsys)
    assert code == 1 and not report["passed"]
    assert any("'next_hidden'" in failure for failure in report["failures"]), report["failures"]


@pytest.mark.integration   # exports and checks the demo model
def test_demo_at_256_passes_on_grounded_limits_and_a_scaled_conv_weight_fails(tmp_path, capsys):
    """The shipped 128x128 model exported at 256x256: onnxruntime's normalisation
    statistics put next_spatial_ring ~1.2e-4 from the reference, within 4x its FP32 noise.
    About 10 s here, so not marked slow."""
    path = _export(tmp_path, 256)
    code, report = _check_json(path, capsys, steps=4)
    assert code == 0 and report["passed"], report["failures"]
    spatial = report["step1_limits"]["next_spatial_ring"]
    assert spatial["source"] == "fp32 noise x 4"
    assert spatial["limit"] == pytest.approx(4 * spatial["fp32_noise"])
    assert spatial["limit"] < 1e-3                                   # grounded, not opened up
    assert report["pred_psnr_db_min"] > 100.0

    code, report = _check_json(_scaled(path, FUSE_WEIGHT, 1.001), capsys, steps=1)
    assert code == 1
    assert any("'next_hidden'" in failure for failure in report["failures"]), report["failures"]
