"""Issue 3's full bounds: 100 teacher-forced steps on real frames at 256 and 512 (slow)."""
import pytest

from export.checks import check_artifact
from export.fp16 import convert_fp16
from export.to_onnx import export_onnx
from stae_ref.config import STAEConfig
from stae_ref.footage import forward_backward, load_clip

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


def test_fp16_100_steps_on_random_weights(default_onnx_256, tmp_path):
    """Recorded behaviour, not issue 3's bound: with *random* weights the network amplifies any
    FP16-size perturbation (the reference against itself with only its input frames rounded to
    FP16 falls to 51 dB by step 100), so the FP16 graph meets 40 dB for 20 steps (measured
    63.7 dB there) and falls to 37.7 dB by step 100. Re-measure on a trained checkpoint."""
    fp16 = tmp_path / "stae256.fp16.onnx"
    convert_fp16(default_onnx_256[0], fp16)
    frames = forward_backward(load_clip("city", (256, 256)), 104)
    parity = check_artifact(fp16, default_onnx_256[1], frames, steps=100, horizon=4,
                            progress=False).parity
    assert all(rel <= parity.tolerances.limit(t) for t, rel in parity.step1_max_rel.items())
    assert min(parity.pred_psnr_db[:20]) >= 40.0
    assert parity.pred_psnr_db_min >= 35.0
