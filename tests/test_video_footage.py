"""Training footage from any video: decoded once into the uint8 cache, cuts found, held-out
tails kept out, and bad input refused before training with the file named."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stae_deploy.runtime.errors import ConfigError, FootageError
from stae_deploy.stae_ref.footage import fetch
from stae_deploy.stae_ref.training_data import training_videos
from stae_deploy.stae_ref.video_cache import (cache_size_bytes, cached_video, expand_video_paths,
                                              scene_cuts)

SIZE = (32, 32)


def write_video(path: Path, frames_bgr: list[np.ndarray], fps: float = 25.0) -> Path:
    """A real mp4 (MPEG-4 Part 2, what OpenCV writes here) of BGR uint8 frames."""
    height, width = frames_bgr[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames_bgr:
        writer.write(frame)
    writer.release()
    return path


def two_shots(count_a: int, count_b: int) -> list[np.ndarray]:
    """A slow pan over one pattern, then a cut to another: frames (64, 96, 3)."""
    rng = np.random.default_rng(0)
    scene_a = cv2.resize(rng.integers(0, 255, (6, 20, 3), np.uint8), (400, 120))
    scene_b = 255 - cv2.resize(rng.integers(0, 255, (6, 20, 3), np.uint8), (400, 120))
    return ([scene_a[20:84, 2 * t:2 * t + 96].copy() for t in range(count_a)]
            + [scene_b[20:84, 2 * t:2 * t + 96].copy() for t in range(count_b)])


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("STAE_DATA_DIR", str(folder))
    return folder


def test_a_video_is_decoded_once_and_read_back_from_the_cache(tmp_path, cache):
    path = write_video(tmp_path / "cam.mp4", two_shots(30, 20))
    first = cached_video(path, SIZE)
    frames_file = Path(first.frames_file)
    stamp = frames_file.stat().st_mtime_ns
    again = cached_video(path, SIZE)
    assert again == first and frames_file.stat().st_mtime_ns == stamp, "decoded a second time"
    assert first.frames().shape == (50, 32, 32, 3) and first.frames().dtype == np.uint8
    assert cache_size_bytes() >= 50 * 32 * 32 * 3
    capture = cv2.VideoCapture(str(path))
    ok, frame_bgr = capture.read()
    from stae_deploy.runtime.frames import bgr_to_model_frame
    expected = np.rint(bgr_to_model_frame(frame_bgr, SIZE) * 255).transpose(1, 2, 0)
    assert np.array_equal(first.frames()[0], expected.astype(np.uint8)), \
        "the cache holds what the runtime would feed the model"
    assert cached_video(path, (16, 16)).frame_size == (16, 16), "the size is part of the key"


def test_scene_cuts_are_found_in_real_footage():
    # bikes.mp4 cuts near frames 30, 76, 137, 187 and 242; city cuts at 116; motion has none.
    assert cached_video(fetch("bikes"), (64, 64)).cuts == (30, 76, 137, 187, 242)
    assert cached_video(fetch("city"), (64, 64)).cuts == (116,)
    assert cached_video(fetch("motion"), (64, 64)).cuts == ()


def test_a_steady_pan_is_not_a_cut_and_a_jump_out_of_it_is():
    steady = np.full(40, 15.0)
    assert scene_cuts(steady) == []
    steady[20] = 60.0
    assert scene_cuts(steady) == [21]


def test_training_videos_split_in_time_and_at_cuts(tmp_path, cache):
    path = write_video(tmp_path / "cam.mp4", two_shots(30, 20))
    [video] = training_videos((), [str(path)], SIZE, 0.2, min_frames=5)
    assert video.video.cuts == (30,)
    assert video.holdout_start == 40 and video.usable == (0, 50)
    assert video.shots().ranges == ((0, 30), (30, 40))
    record = video.provenance()
    assert record["sha256"] == video.video.sha256 and record["held_out"] == [40, 50]
    assert record["train_ranges"] == [[0, 30], [30, 40]] and record["cuts"] == [30]


def test_folders_and_globs_expand_to_their_videos(tmp_path):
    folder = tmp_path / "cams"
    folder.mkdir()
    for name in ("b.mp4", "a.avi", "notes.txt"):
        (folder / name).write_bytes(b"x")
    assert [p.name for p in expand_video_paths([str(folder)])] == ["a.avi", "b.mp4"]
    assert [p.name for p in expand_video_paths([str(folder / "*.mp4")])] == ["b.mp4"]
    with pytest.raises(FootageError, match=r"video .*nothing\*\.mkv: no such file"):
        expand_video_paths([str(folder / "nothing*.mkv")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FootageError, match="empty: holds no video file"):
        expand_video_paths([str(tmp_path / "empty")])


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", r"missing.mp4: no such file"),
    (lambda d: (d / "text.mp4").write_text("not a video") and d / "text.mp4",
     r"text.mp4: (OpenCV cannot open it|decodes to no frame)"),
    (lambda d: write_video(d / "short.mp4", two_shots(4, 0)),
     r"short.mp4: its training part .* has no cut-free run of 5 frames"),
    (lambda d: write_video(d / "cuts.mp4", two_shots(3, 3) + two_shots(3, 0)),
     r"cuts.mp4: its training part .*cuts at \[3, 6\].* no cut-free run"),
])
def test_bad_footage_is_refused_before_training_naming_the_file(tmp_path, cache, make, message):
    with pytest.raises(FootageError, match=message):
        training_videos((), [str(make(tmp_path))], SIZE, 0.2, min_frames=5)


def test_evaluation_only_clips_are_never_trained_on(cache):
    with pytest.raises(ConfigError, match="'diver' is kept for evaluation only"):
        training_videos(("carphone", "diver"), [], SIZE, 0.2, min_frames=5)


@pytest.mark.integration   # trains
def test_stae_train_on_a_folder_of_video_records_the_file(tmp_path, cache, capsys):
    from stae_deploy.cli.main import main
    from stae_deploy.stae_ref.checkpoint import load_checkpoint
    from stae_deploy.stae_ref.config import STAEConfig

    folder = tmp_path / "cams"
    folder.mkdir()
    path = write_video(folder / "cam.mp4", two_shots(30, 20))
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(STAEConfig(
        frame_size=(32, 32), patch=4, stride2_stages=1, hidden=4, layers=1, tau=2,
        kernel=(1, 3, 3), head="residual").to_dict()))
    code = main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run"),
                 "--video", str(folder), "--iterations", "2", "--val-every", "2", "--crop", "16",
                 "--batch", "2", "--steps", "3", "--quiet"])
    assert code == 0
    checkpoint = json.loads(capsys.readouterr().out.splitlines()[-1])["checkpoint"]
    _, metadata = load_checkpoint(checkpoint)
    assert metadata["train_config"]["clips"] == [] and metadata["train_config"]["videos"] == [str(path)]
    [record] = metadata["trained_on"]
    assert record["file"] == str(path.resolve()) and record["held_out"] == [40, 50]
