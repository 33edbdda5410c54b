"""The ``stae`` command line: info, data and predict, and one-line errors instead of tracebacks."""
import json

import cv2
import pytest

from stae_deploy.cli.main import main
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model_cost import parameter_count
from stae_deploy.stae_ref.state_spec import io_spec

from conftest import SMALL_CONFIG, seeded_model


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.integration   # traces the paper's model
def test_info_json_at_512(capsys, default_model):
    report = run_json(capsys, "info", "--frame-size", "512", "--json")
    assert report["latent_shape"] == [64, 2, 16, 16]
    assert report["config"] == STAEConfig().to_dict()
    assert report["params"] == parameter_count(default_model)
    spec = io_spec(STAEConfig())
    assert report["state"] == [
        {"name": "frame", "shape": [1, 3, 512, 512], "dtype": "float32", "output": None},
        *({"name": p.input.name, "shape": list(p.input.shape), "dtype": "float32",
           "output": p.output.name} for p in spec.state)]
    assert 20 < report["gflop_per_step"] < 30        # measured 25.1 (conv/matmul FLOPs)


@pytest.mark.integration   # traces the paper's model
def test_info_json_at_256_is_a_quarter_of_the_recurrent_cost(capsys):
    at_256 = run_json(capsys, "info", "--frame-size", "256", "--json")
    at_512 = run_json(capsys, "info", "--json")
    assert at_256["latent_shape"] == [64, 2, 8, 8]
    assert at_256["params"] == at_512["params"]
    assert at_256["gflop_per_step"] == pytest.approx(at_512["gflop_per_step"] / 4, rel=0.01)


def test_info_reads_a_config_file_and_a_checkpoint(capsys, tmp_path):
    config_path = tmp_path / "cfg.json"
    config_path.write_text(SMALL_CONFIG.to_json())
    assert run_json(capsys, "info", "--config", str(config_path), "--json")["config"] == \
        SMALL_CONFIG.to_dict()
    from stae_deploy.stae_ref.checkpoint import save_checkpoint

    digest = save_checkpoint(seeded_model(SMALL_CONFIG), tmp_path / "small.pt")
    report = run_json(capsys, "info", "--checkpoint", str(tmp_path / "small.pt"), "--json")
    assert report["checkpoint_sha256"] == digest
    assert report["latent_shape"] == list(SMALL_CONFIG.latent_shape)


@pytest.mark.parametrize("argv, message", [
    (["info", "--frame-size", "500"], "frame_size 500x500: frame_size height"),
    (["info", "--checkpoint", "missing.pt"], "missing.pt: no such file"),
    (["predict", "--clip", "carphone", "--frame-size", "64", "--output-dir", "{tmp}"],
     "reference_side_by_side.mp4 already exists; pass --force"),
    # each command's settings are validated before any file is read
    (["export", "-o", "{tmp}/x.onnx", "--opset", "16"], "opset: TensorRT needs opset >= 17"),
    (["check", "missing.onnx", "--steps", "0"], "steps/horizon: both must be >= 1, got 0 and 4"),
    (["fp16", "missing.onnx", "-o", "{tmp}/x.onnx", "--fp16-ops", "Conv", "Softmax"],
     "fp16_op_types: ['Softmax'] must stay FP32"),
    (["calibrate", "missing.onnx", "-o", "{tmp}/c.npz", "--clips"],
     "clips/videos: give at least one source of frames"),
    (["quantize", "missing.onnx", "--calib", "c.npz", "-o", "{tmp}/q.onnx", "--op-types", "all",
      "Conv"], "op_types: 'all' cannot be combined with op types"),
    (["drift", "missing.onnx", "missing.int8.onnx", "--steps", "1"], "steps: need at least 2, got 1"),
    (["sensitivity", "missing.onnx", "--calib", "c.npz", "-o", "{tmp}/s.md", "--clips", "mars"],
     "unknown clip 'mars'"),
])
def test_user_errors_are_one_line_and_exit_2(capsys, tmp_path, argv, message):
    (tmp_path / "reference_side_by_side.mp4").write_text("user's file")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert (tmp_path / "reference_side_by_side.mp4").read_text() == "user's file"


def test_data_lists_the_cached_clips(capsys):
    paths = run_json(capsys, "data", "--json")
    assert sorted(paths) == ["carphone", "city", "motion"]
    assert paths["city"].endswith("cityCC0.mpg") and paths["motion"].endswith("motion.mov")


@pytest.mark.integration   # runs the reference over a clip, writes a video
def test_predict_writes_video_plot_and_per_step_psnr(capsys, tmp_path):
    assert main(["predict", "--clip", "carphone", "--frame-size", "64", "--max-frames", "6",
                 "--output-dir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "reference_psnr.json").read_text())
    assert len(summary["model_psnr_db"]) == len(summary["copy_last_psnr_db"]) == 5
    assert all(20 < p < 45 for p in summary["copy_last_psnr_db"])
    video = cv2.VideoCapture(str(tmp_path / "reference_side_by_side.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    ok, frame = video.read()
    assert ok and frame.shape[1] == 3 * 64
    assert cv2.imread(str(tmp_path / "reference_psnr.png")) is not None
