"""stae eval --video: any video scored against copy-last, all frames and changing frames apart,
with the runtime's repeated-frame policy and bootstrap intervals."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stae_deploy.cli.main import main
from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.runtime.metrics import bootstrap_mean_interval
from stae_deploy.stae_ref.checkpoint import load_checkpoint
from stae_deploy.stae_ref.evaluation import ClipScores, teacher_forced_scores
from stae_deploy.stae_ref.footage import load_clip
from stae_deploy.stae_ref.training_data import ClipSplit
from stae_deploy.stae_ref.video_eval import VideoEvalConfig, evaluate_videos, score_stream

from conftest import DEMO_CHECKPOINT


def write_clip(path: Path, frames: np.ndarray, repeat: int = 1) -> Path:
    """A real mp4 of model frames (N, 3, H, W), each written ``repeat`` times."""
    height, width = frames.shape[-2:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (width, height))
    for frame in frames:
        for _ in range(repeat):
            writer.write(model_frame_to_bgr(frame))
    writer.release()
    return path


@pytest.fixture(scope="module")
def demo_model():
    return load_checkpoint(DEMO_CHECKPOINT)[0].eval()


def test_without_repeats_the_gain_is_the_teacher_forced_evaluations(demo_model):
    frames = load_clip("city", (64, 64), max_frames=24)
    result = score_stream(demo_model, frames, first_target=12)
    scores = ClipScores()
    teacher_forced_scores(demo_model, ClipSplit("city", frames, 12), scores, with_ssim=False)
    assert result["targets"] == len(scores.model_psnr_db) == 12
    assert result["repeated_targets"] == 0
    assert result["model_psnr_db"] == pytest.approx(np.mean(scores.model_psnr_db), abs=1e-3)
    assert result["gain_db"] == pytest.approx(
        np.mean(scores.model_psnr_db) - np.mean(scores.copy_last_psnr_db), abs=2e-3)
    assert result["changing_gain_db"] == result["gain_db"]


def test_repeated_targets_are_counted_and_excluded_from_the_changing_gain(demo_model, tmp_path):
    path = write_clip(tmp_path / "doubled.mp4", load_clip("carphone", (64, 64), max_frames=15),
                      repeat=2)
    frames = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB).transpose(2, 0, 1) / 255.0
                       for f in read_all(path)]).astype(np.float32)
    held = score_stream(demo_model, frames, first_target=1, repeated_frames="hold")
    stepped = score_stream(demo_model, frames, first_target=1, repeated_frames="step")
    assert held["repeated_targets"] == stepped["repeated_targets"] == 15
    assert held["repeated_model_psnr_db"] > stepped["repeated_model_psnr_db"] + 3.0, \
        "holding the state on repeats and copying where a repeat is due beats stepping"
    low, high = held["changing_gain_db_ci95"]
    assert low <= held["changing_gain_db"] <= high


def read_all(path: Path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_the_bootstrap_interval_is_seeded_and_holds_the_mean():
    values = np.random.default_rng(1).normal(0.5, 1.0, 200)
    first = bootstrap_mean_interval(values, 2000, seed=3)
    assert first == bootstrap_mean_interval(values, 2000, seed=3)
    assert first[0] < values.mean() < first[1] and first[1] - first[0] < 0.4


def test_bad_videos_are_named(tmp_path):
    with pytest.raises(FootageError, match=r"video .*nope\.mp4: no such file"):
        evaluate_videos(VideoEvalConfig(str(DEMO_CHECKPOINT), (str(tmp_path / "nope.mp4"),)))
    short = write_clip(tmp_path / "short.mp4", load_clip("city", (64, 64), max_frames=2))
    with pytest.raises(FootageError, match=r"short\.mp4: needs at least 3 frames"):
        evaluate_videos(VideoEvalConfig(str(DEMO_CHECKPOINT), (str(short),)))
    with pytest.raises(ConfigError, match=r"start_fraction: expected in \[0, 1\)"):
        VideoEvalConfig(str(DEMO_CHECKPOINT), (str(short),), start_fraction=1.0)


def test_stae_eval_video_end_to_end(tmp_path, capsys):
    path = write_clip(tmp_path / "cam.mp4", load_clip("city", (96, 96), max_frames=16))
    plot = tmp_path / "psnr.png"
    code = main(["eval", str(DEMO_CHECKPOINT), "--video", str(path), "--frame-size", "64",
                 "--start-fraction", "0.5", "--horizons", "2", "--plot", str(plot), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and plot.stat().st_size > 0
    video = report["per_video"]["cam"]
    assert report["frame_size"] == [64, 64] and video["targets"] == 8
    assert [h["horizon"] for h in video["horizon_psnr_db"]] == [1, 2]
