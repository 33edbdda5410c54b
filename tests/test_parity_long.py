"""The full parity bounds: 100 teacher-forced steps on real frames at 256 and 512 (slow)."""
import pytest

from stae_deploy.verify.checks import check_artifact
from stae_deploy.calibration.fp16 import convert_fp16
from stae_deploy.export.to_onnx import export_onnx
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip

from conftest import random_provenance, seeded_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("size", [256, 512])
def test_fp32_100_steps(size, tmp_path):
    model = seeded_model(STAEConfig(frame_size=(size, size)))
    path = tmp_path / f"stae{size}.onnx"
    export_onnx(model, path, random_provenance(model))
    frames = forward_backward(load_clip("city", (size, size)), 104)
    parity = check_artifact(path, model, frames, steps=100, horizon=4, progress=False).parity
    assert parity.passed, parity.failures
    assert all(rel <= 1e-4 for rel in parity.step1_max_rel.values()), parity.step1_max_rel
    assert parity.pred_psnr_db_min >= 60.0


def test_fp16_100_steps(default_onnx_256, tmp_path):
    """The FP16 bound: >= 40 dB vs the FP32 reference at every one of 100 steps (measured
    41.0 dB minimum with convolutions in FP16 and the state path in FP32)."""
    fp16 = tmp_path / "stae256.fp16.onnx"
    convert_fp16(default_onnx_256[0], fp16)
    frames = forward_backward(load_clip("city", (256, 256)), 104)
    parity = check_artifact(fp16, default_onnx_256[1], frames, steps=100, horizon=4,
                            progress=False).parity
    assert parity.passed, parity.failures
    assert parity.pred_psnr_db_min >= 40.0
