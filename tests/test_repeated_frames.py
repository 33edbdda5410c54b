"""Repeated frames never cost accuracy: a frame that repeats its predecessor is not a model step,
and a stream with a steady repeat cadence emits an exact copy where the next frame repeats."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.repeated_frames import FrameCadence, is_repeated_frame
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_stream
from stae_deploy.stae_ref.footage import load_clip


def frame_of(value: float) -> np.ndarray:
    return np.full((3, 4, 4), value, np.float32)


@pytest.mark.parametrize("pattern, expected", [
    ("abcdef", [False] * 6),                               # no repeats: never expect one
    ("aabbccdd", [True, False] * 4),                       # 2x: expect a repeat after a new frame
    ("aaabbbccc", [True, True, False] * 3),                # 3x
])
def test_the_cadence_expects_repeats_where_the_stream_has_them(pattern, expected):
    cadence = FrameCadence()
    seen = []
    for letter in pattern:
        cadence.observe(frame_of(ord(letter) / 255.0))
        seen.append(cadence.expects_repeat())
    first_runs = 2 * (len(pattern) // len(set(pattern)))    # the cadence is known after a run
    assert seen[first_runs:] == expected[first_runs:], seen


def test_an_irregular_repeat_does_not_make_the_stream_expect_more():
    cadence = FrameCadence()
    for letter in "abccdefgh":
        repeated = cadence.observe(frame_of(ord(letter) / 255.0))
        assert not cadence.expects_repeat()
        assert repeated == (letter == "c" and cadence.position == 2)


def test_step_mode_never_skips_and_bad_options_name_the_field():
    assert not FrameCadence("step").skips_step(True) and FrameCadence("hold").skips_step(True)
    with pytest.raises(ConfigError, match="repeated_frames: expected one of"):
        RunOptions(repeated_frames="skip")
    with pytest.raises(ConfigError, match=r"repeat_threshold: expected in \[0, 1\)"):
        RunOptions(repeat_threshold=-1)


def test_codec_noise_on_a_duplicate_is_under_the_threshold_and_motion_is_not(tmp_path):
    frames = doubled_clip(tmp_path, count=12)
    for t in range(1, len(frames)):
        assert is_repeated_frame(frames[t - 1], frames[t]) == (t % 2 == 1), t


def doubled_clip(tmp_path: Path, count: int) -> np.ndarray:
    """carphone's first ``count`` frames, each written twice (as a 12.5 -> 25 fps conversion
    does) into a real mp4 and decoded back: (2 * count, 3, 128, 128)."""
    path = write_doubled(tmp_path, count)
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB).transpose(2, 0, 1) / 255.0)
    return np.asarray(frames, np.float32)


def write_doubled(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "doubled.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (128, 128))
    for frame in load_clip("carphone", (128, 128), max_frames=count):
        for _ in range(2):
            writer.write(model_frame_to_bgr(frame))
    writer.release()
    return path


def streamed(model: Path, video: Path, mode: str, metrics: Path) -> list[dict]:
    with FrameGrabber(SourceConfig(str(video)), log=lambda _: None) as grabber:
        run_stream(Predictor.load(model), grabber,
                   RunOptions(repeated_frames=mode, metrics=metrics), log=lambda _: None)
    return [json.loads(line) for line in metrics.read_text().splitlines()]


def test_on_a_doubled_clip_repeats_cost_nothing_and_new_frames_keep_the_models_gain(
        demo_dynamic_onnx_path, tmp_path):
    video = write_doubled(tmp_path, count=40)
    step = streamed(demo_dynamic_onnx_path, video, "step", tmp_path / "step.jsonl")
    hold = streamed(demo_dynamic_onnx_path, video, "hold", tmp_path / "hold.jsonl")
    assert [r["repeated"] for r in hold] == [i % 2 == 1 for i in range(80)]
    established = 6                                        # after three runs of two
    for record in hold[established:]:
        if record["repeated"]:
            assert record["psnr_db"] >= record["copy_last_psnr_db"], record
    repeated_step = [r["psnr_db"] for r in step[established:] if r["repeated"]]
    repeated_copy = [r["copy_last_psnr_db"] for r in step[established:] if r["repeated"]]
    assert np.mean(repeated_step) < np.mean(repeated_copy) - 3.0, \
        "stepping on every frame costs accuracy on repeats (what hold mode fixes)"
    new_hold = [r["psnr_db"] - r["copy_last_psnr_db"] for r in hold[established:]
                if not r["repeated"]]
    assert np.mean(new_hold) > 0.0, "new frames keep the model's gain over copy-last"


def test_without_repeats_hold_and_step_are_identical(demo_dynamic_onnx_path, tmp_path):
    path = tmp_path / "plain.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (128, 128))
    for frame in load_clip("city", (128, 128), max_frames=20):
        writer.write(model_frame_to_bgr(frame))
    writer.release()
    step = streamed(demo_dynamic_onnx_path, path, "step", tmp_path / "step.jsonl")
    hold = streamed(demo_dynamic_onnx_path, path, "hold", tmp_path / "hold.jsonl")
    assert not any(r["repeated"] for r in hold)
    assert [r.get("psnr_db") for r in hold] == [r.get("psnr_db") for r in step]
