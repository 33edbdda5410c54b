"""Synthetic camera motion over the scikit-image photos: the camera path is exact ground truth.

Checked against OpenCV itself (a direct ``cv2.warpAffine`` of the photo, ``cv2.resize`` with area
interpolation, ``cv2.findTransformECC`` estimating the shift between rendered frames), not against
the module's own arithmetic.
"""
from __future__ import annotations

import math
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref import synthetic_motion
from stae_deploy.stae_ref.synthetic_motion import (PHOTO_NAMES, SyntheticMotion,
                                                   SyntheticMotionConfig, frame_to_frame,
                                                   load_named_photos, load_photos, render_frames,
                                                   save_preview)

# A camera that only pans, at a constant velocity, one photo pixel per output pixel.
PURE_PAN = SyntheticMotionConfig(zoom_per_frame_max=0.0, rotation_deg_per_frame_max=0.0,
                                 tilt_deg_max=0.0, motion_variability=0.0, shake_fraction=0.0,
                                 static_fraction=0.0, pause_fraction=0.0,
                                 source_px_per_output_px_range=(1.0, 1.0), flip_probability=0.0)
# Everything faster and wider than real cameras, to push the view against the photo's edges.
VIOLENT = SyntheticMotionConfig(pan_px_per_frame_max=12.0, zoom_per_frame_max=0.06,
                                rotation_deg_per_frame_max=3.0, tilt_deg_max=30.0,
                                motion_change_frames=3.0, motion_variability=1.0,
                                shake_fraction=1.0, shake_px_range=(2.0, 4.0),
                                source_px_per_output_px_range=(0.5, 6.0))


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return load_named_photos()


def test_photos_load_offline_as_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("a photo loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    synthetic_motion._skimage_photos.cache_clear()
    named = load_named_photos()
    assert tuple(named) == PHOTO_NAMES and len(named) == 11
    for name, photo in named.items():
        assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3, name
        assert min(photo.shape[:2]) >= 256 and not photo.flags.writeable, name
    assert named["chelsea"].shape == (300, 451, 3)
    assert named["hubble_deep_field"].shape == (872, 1000, 3)
    brick = named["brick"]                       # grey texture repeated to three channels
    assert np.array_equal(brick[..., 0], brick[..., 2])
    assert not np.array_equal(named["coffee"][..., 0], named["coffee"][..., 2])
    assert [p.shape for p in load_photos(400)] == [
        p.shape for p in named.values() if min(p.shape[:2]) >= 400]
    assert len(load_photos(400)) == 10          # all but chelsea
    with pytest.raises(ConfigError, match="^min_side"):
        load_photos(0)


def test_sequences_are_deterministic_shaped_and_in_range(photos: dict[str, np.ndarray]) -> None:
    motion = SyntheticMotion(list(photos.values()))
    first = [motion.sample(np.random.default_rng(7), 13, 96) for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    assert not np.array_equal(first[0], motion.sample(np.random.default_rng(8), 13, 96))
    rng = np.random.default_rng(0)
    for frames, size in ((13, 96), (1, 64), (2, 128), (40, 48)):
        clip = motion.sample(rng, frames, size)
        assert clip.shape == (frames, 3, size, size) and clip.dtype == np.float32
        assert 0.0 <= clip.min() and clip.max() <= 1.0 and clip.std() > 0.01


def test_the_view_never_leaves_the_photo(photos: dict[str, np.ndarray]) -> None:
    # A uniform photo shows any sample outside it, even a 1/32 bilinear share of the black border.
    grey = np.full((150, 200, 3), 200, np.uint8)
    rng = np.random.default_rng(1)
    for config in (SyntheticMotionConfig(), VIOLENT):
        motion = SyntheticMotion([grey, photos["chelsea"], photos["coffee"]], config)
        for _ in range(60):
            sequence = motion.sample_sequence(rng, 30, int(rng.choice([48, 96, 128])))
            size = sequence.frames.shape[-1]
            height, width = sequence.photo.shape[:2]
            corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1],
                                [size - 1, size - 1, 1]], np.float64)
            points = np.einsum("fij,cj->fci", sequence.matrices, corners)
            assert points[..., 0].min() >= 0 and points[..., 0].max() <= width - 1
            assert points[..., 1].min() >= 0 and points[..., 1].max() <= height - 1
            if sequence.photo is grey:
                assert np.array_equal(np.rint(sequence.frames * 255), np.full_like(
                    sequence.frames, 200)), "a frame sampled outside the photo"
            else:           # neither photo has a black pixel: no frame has any
                assert (sequence.frames.max(axis=1) == 0).mean(axis=(1, 2)).max() == 0.0


def test_a_frame_is_the_photo_warped_by_its_matrix(photos: dict[str, np.ndarray]) -> None:
    motion = SyntheticMotion([photos["coffee"], photos["motorcycle_left"]], PURE_PAN)
    mirrored = SyntheticMotion([photos["coffee"]], SyntheticMotionConfig(
        source_px_per_output_px_range=(0.5, 0.9), zoom_per_frame_max=0.0, flip_probability=1.0))
    rng = np.random.default_rng(2)
    for sequence in [motion.sample_sequence(rng, 13, 96) for _ in range(4)] + \
            [mirrored.sample_sequence(rng, 13, 96) for _ in range(2)]:
        for frame, matrix in zip(sequence.frames, sequence.matrices):
            direct = cv2.warpAffine(sequence.photo, matrix, (96, 96),
                                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            assert np.array_equal(np.rint(frame * 255).astype(np.uint8),
                                  direct.transpose(2, 0, 1))
    assert np.linalg.det(sequence.matrices[:, :, :2]).max() < 0      # mirrored left-right
    default = SyntheticMotion(list(photos.values()))
    for _ in range(5):                  # zoomed out (area-averaged) too: the path is the truth
        sequence = default.sample_sequence(rng, 13, 96)
        assert np.array_equal(render_frames(sequence.photo, sequence.matrices, 96),
                              sequence.frames)


def test_pure_pan_shifts_frame_t_by_the_configured_velocity(
        photos: dict[str, np.ndarray]) -> None:
    motion = SyntheticMotion([photos[name] for name in ("coffee", "chelsea", "motorcycle_left")],
                             PURE_PAN)
    rng = np.random.default_rng(3)
    errors_px = []
    for _ in range(5):
        sequence = motion.sample_sequence(rng, 13, 96)
        pan = sequence.pan_px_per_frame
        speed = np.linalg.norm(pan, axis=1)
        # Constant velocity, but for a step that bounces off the photo's edge (moving less).
        assert speed.max() <= 3.5 and np.isclose(speed, speed.max()).mean() >= 0.75
        between = frame_to_frame(sequence.matrices)          # frame t+1 pixel -> frame t pixel
        assert np.allclose(between[:, :, :2], np.eye(2), atol=1e-12)
        assert np.allclose(between[:, :, 2], pan, atol=1e-9)
        grey = [cv2.cvtColor(f.transpose(1, 2, 0), cv2.COLOR_RGB2GRAY) for f in sequence.frames]
        for t in range(12):
            # OpenCV's own estimate of how far the content moved from frame t to t+1.
            _, warp = cv2.findTransformECC(
                grey[t], grey[t + 1], np.eye(2, 3, dtype=np.float32), cv2.MOTION_TRANSLATION,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6), None, 1)
            errors_px.append(np.abs(warp[:, 2] + pan[t]).max())  # content moves by -pan
    assert max(errors_px) < 0.2 and np.median(errors_px) < 0.05


def test_relative_motion_is_the_applied_velocities_within_the_configured_ranges(
        photos: dict[str, np.ndarray]) -> None:
    config = SyntheticMotionConfig(shake_fraction=0.0)
    motion = SyntheticMotion(list(photos.values()), config)
    rng = np.random.default_rng(4)
    size, middle = 128, 63.5
    pans, changes = [], []
    for _ in range(150):
        sequence = motion.sample_sequence(rng, 25, size)
        pan, zoom = sequence.pan_px_per_frame, sequence.zoom_per_frame
        rotation = sequence.rotation_deg_per_frame
        assert np.linalg.norm(pan, axis=1).max() <= 3.5 + 1e-9
        assert np.abs(zoom).max() <= 0.01 + 1e-9 and np.abs(rotation).max() <= 0.5 + 1e-9
        # Frame t+1 pixel u is frame t pixel middle + pan + R(rotation) (u - middle) / e^zoom.
        radians = np.radians(rotation)
        linear = np.stack([np.stack([np.cos(radians), -np.sin(radians)], -1),
                           np.stack([np.sin(radians), np.cos(radians)], -1)], 1)
        linear *= np.exp(-zoom)[:, None, None]
        between = frame_to_frame(sequence.matrices)
        assert np.allclose(between[:, :, :2], linear, atol=1e-9)
        assert np.allclose(between[:, :, 2], middle + pan - linear.sum(axis=2) * middle, atol=1e-7)
        if sequence.kind == "static":
            assert np.array_equal(sequence.frames, np.broadcast_to(sequence.frames[0],
                                                                   sequence.frames.shape))
        if sequence.kind == "moving":
            pans.append(pan)
            changes.append(np.abs(np.diff(pan, axis=0)).mean())
    # Velocities drift smoothly: they vary over a sequence, a little from one frame to the next.
    assert np.mean([p.std(axis=0).max() for p in pans]) > 0.6
    assert np.mean(changes) < 0.25
    assert max(np.abs(p).max() for p in pans) > 3.0


def test_shake_pause_and_static_sequences(photos: dict[str, np.ndarray]) -> None:
    still = dict(pan_px_per_frame_max=0.0, zoom_per_frame_max=0.0, rotation_deg_per_frame_max=0.0)
    shaky = SyntheticMotion([photos["gravel"]], SyntheticMotionConfig(
        **still, static_fraction=0.0, pause_fraction=0.0, shake_fraction=1.0,
        shake_px_range=(1.0, 1.0)))
    sequence = shaky.sample_sequence(np.random.default_rng(5), 40, 96)
    assert np.allclose(np.sqrt((sequence.shake_px ** 2).mean(axis=0)), 1.0)   # RMS per axis
    between = frame_to_frame(sequence.matrices)       # a pure shift by the change of shake
    assert np.allclose(between[:, :, 2], sequence.shake_px[1:] - sequence.shake_px[:-1])
    pausing = SyntheticMotion([photos["gravel"]], SyntheticMotionConfig(
        static_fraction=0.0, pause_fraction=1.0, shake_fraction=0.0))
    for seed in range(5):
        sequence = pausing.sample_sequence(np.random.default_rng(seed), 25, 64)
        stopped = (np.abs(sequence.pan_px_per_frame).sum(axis=1) + np.abs(sequence.zoom_per_frame)
                   + np.abs(sequence.rotation_deg_per_frame)) == 0
        assert sequence.kind == "pause" and 6 <= stopped.sum() <= 12
        steps = np.flatnonzero(stopped)
        assert np.array_equal(steps, np.arange(steps[0], steps[0] + steps.size))   # one stretch
        assert np.array_equal(sequence.frames[steps[0]], sequence.frames[steps[-1] + 1])
    static = SyntheticMotion([photos["gravel"]], SyntheticMotionConfig(static_fraction=1.0,
                                                                        pause_fraction=0.0))
    sequence = static.sample_sequence(np.random.default_rng(6), 9, 64)
    assert sequence.kind == "static" and not sequence.shake_px.any()
    assert all(np.array_equal(frame, sequence.frames[0]) for frame in sequence.frames)


def test_zoomed_out_views_are_area_averaged_not_aliased(photos: dict[str, np.ndarray]) -> None:
    gravel = photos["gravel"]                      # fine texture: aliasing shows
    left, top, size = 37, 51, 64
    for scale in (2.0, 3.0, 4.0, 6.0):
        view = int(scale * size)
        offset = (scale - 1) / 2                   # output pixels centred on scale x scale blocks
        matrix = np.array([[[scale, 0, left + offset], [0, scale, top + offset]]])
        frame = render_frames(gravel, matrix, size)[0].transpose(1, 2, 0) * 255
        area = cv2.resize(gravel[top:top + view, left:left + view], (size, size),
                          interpolation=cv2.INTER_AREA).astype(np.float32)
        naive = cv2.warpAffine(gravel, matrix[0], (size, size),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP).astype(np.float32)
        if scale in (2.0, 4.0):         # the 2x-supersampled path lines up with the blocks
            assert np.abs(frame - area).max() <= 1.01
        else:                           # about half the error plain bilinear sampling makes
            assert np.abs(frame - area).mean() < 0.6 * np.abs(naive - area).mean()
        if scale > 2.0:                 # (8 and 12 grey levels off at 4x and 6x)
            assert np.abs(naive - area).mean() > 7.0


@pytest.mark.parametrize("field, value", [
    ("pan_px_per_frame_max", -1.0), ("zoom_per_frame_max", 0.5),
    ("rotation_deg_per_frame_max", 90.0), ("tilt_deg_max", -1.0), ("motion_change_frames", 0.0),
    ("motion_variability", 1.5), ("shake_fraction", 2.0), ("shake_px_range", (2.0, 1.0)),
    ("shake_smoothness_frames", -1.0), ("static_fraction", -0.1), ("pause_fraction", 0.95),
    ("source_px_per_output_px_range", (0.0, 2.0)), ("flip_probability", 1.5),
    ("pan_px_per_frame_max", math.nan), ("shake_px_range", (0.3, "1")),
])
def test_config_errors_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: expected"):
        SyntheticMotionConfig(**{field: value})


def test_sample_and_photo_errors_name_the_argument(photos: dict[str, np.ndarray]) -> None:
    motion = SyntheticMotion([photos["coffee"]])
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="^frames: expected an integer >= 1"):
        motion.sample(rng, 0, 96)
    with pytest.raises(ConfigError, match="^size: expected an integer >= 2"):
        motion.sample(rng, 13, 1.5)
    with pytest.raises(ConfigError, match=r"^photos\[1\]: expected RGB uint8"):
        SyntheticMotion([photos["coffee"], photos["coffee"][..., 0]])
    with pytest.raises(ConfigError, match="^photos: expected at least one"):
        SyntheticMotion([])


def test_preview_png(photos: dict[str, np.ndarray], tmp_path: Path) -> None:
    path = save_preview(tmp_path / "preview.png", SyntheticMotion([photos["chelsea"]]),
                        np.random.default_rng(0), sequences=3, frames=5, size=64)
    image = cv2.imread(str(path))
    assert image.shape == (3 * (64 + 22), 5 * 64, 3)
