"""INT8 on the trained demo checkpoint: a short rollout must stay within the drift recorded in
calibration/demo_int8_bounds.json (the 1000-step figures are in calibration/README.md).

Short procedure: calibrate on 60 steps of each clip's training frames (every 6th step from step
0), quantise with the default target and policy, then 40 teacher-forced steps on the held-out
frames of city and carphone. The bound fails on any regression in the quantiser, the policy, the
calibration or the model."""
import json
from pathlib import Path

import pytest

from stae_deploy.calibration.calib_data import save_calibration
from stae_deploy.calibration.drift import held_out_streams, measure_drift
from stae_deploy.calibration.quantize import quantize_model
from stae_deploy.calibration.record import calibration_streams, record_calibration

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = json.loads((ROOT / "calibration" / "demo_int8_bounds.json").read_text())
DEMO_CHECKPOINT = ROOT / "stae_ref" / "checkpoints" / "demo" / "stae_demo.pt"

pytestmark = [pytest.mark.network, pytest.mark.integration]  # quantizes, 1000-step drift


def short_drift(workdir: Path, target: str) -> dict:
    """The short procedure of the module docstring; returns measure_drift's report."""
    from stae_deploy.export.to_onnx import export_onnx
    from stae_deploy.runtime.files import sha256_file
    from stae_deploy.stae_ref.checkpoint import load_checkpoint, weights_sha256

    model, _ = load_checkpoint(DEMO_CHECKPOINT)
    fp32 = workdir / "demo.onnx"
    export_onnx(model, fp32, {"checkpoint": str(DEMO_CHECKPOINT),
                              "checkpoint_sha256": sha256_file(DEMO_CHECKPOINT),
                              "weights_sha256": weights_sha256(model)})
    frame_size = model.config.frame_size
    streams = calibration_streams(frame_size, ("city", "carphone", "motion"), (), steps=60)
    tensors, info = record_calibration(fp32, streams, warmup=0, every=6, progress=False)
    save_calibration(workdir / "calib.npz", tensors, info)
    int8 = workdir / "demo.int8.onnx"
    quantize_model(fp32, workdir / "calib.npz", int8, target=target)
    return measure_drift(fp32, {"int8": int8},
                         held_out_streams(frame_size, ("city", "carphone"), steps=40),
                         progress=False)


@pytest.mark.parametrize("target", sorted(BOUNDS["targets"]))
def test_demo_int8_drift_stays_within_the_recorded_bound(target, tmp_path):
    worst = short_drift(tmp_path, target)["worst"]["int8"]
    bound = BOUNDS["targets"][target]["bound"]
    failures = [f"{name} {worst[name]:.4f} < {limit}" for name, limit in bound["min"].items()
                if worst[name] < limit]
    failures += [f"{name} {worst[name]:.4f} > {limit}" for name, limit in bound["max"].items()
                 if worst[name] > limit]
    assert not failures, f"{target}: worst held-out clip over 40 steps: " + "; ".join(failures)
