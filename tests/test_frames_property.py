"""Whatever a camera or a caller hands over, the runtime answers with a prediction or one clear
FrameFormatError, never a crash from deep inside OpenCV or onnxruntime, and a refused frame never
advances the stream's state (property-based: hypothesis generates the frames)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from stae_deploy.runtime.errors import FrameFormatError
from stae_deploy.runtime.frames import bgr_to_model_frame
from stae_deploy.runtime.predictor import Predictor

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64,
                          np.bool_])


@pytest.fixture(scope="module")
def predictor(small_onnx_path):
    return Predictor.load(small_onnx_path[0])


@SETTINGS
@given(frame=arrays(DTYPES, array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)),
       frame_hw=st.sampled_from([(8, 8), (6, 10), (16, 4)]))
def test_any_camera_frame_becomes_a_model_frame_or_a_clear_error(frame, frame_hw):
    try:
        model_frame = bgr_to_model_frame(frame, frame_hw)
    except FrameFormatError as err:
        assert "camera frame: expected uint8 (H, W, 3) BGR" in str(err)
        assert str(frame.dtype) in str(err) and str(frame.shape) in str(err)
        return
    assert frame.dtype == np.uint8 and frame.ndim in (2, 3)
    assert model_frame.shape == (3, *frame_hw) and model_frame.dtype == np.float32
    assert 0.0 <= model_frame.min() and model_frame.max() <= 1.0


@SETTINGS
@given(frame=arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40),
                                        st.sampled_from([1, 3, 4]))))
def test_grey_and_bgra_camera_frames_are_converted(frame):
    """Grey is BGR with three equal channels; BGRA is BGR with its alpha dropped."""
    as_bgr = {1: np.repeat(frame, 3, axis=2), 3: frame, 4: frame[:, :, :3]}[frame.shape[2]]
    np.testing.assert_array_equal(bgr_to_model_frame(frame, (8, 8)),
                                  bgr_to_model_frame(np.ascontiguousarray(as_bgr), (8, 8)))
    np.testing.assert_array_equal(bgr_to_model_frame(frame[:, :, 0], (8, 8)),
                                  bgr_to_model_frame(np.repeat(frame[:, :, :1], 3, axis=2), (8, 8)))


def frames_near_the_model_shape():
    """Frames a caller might pass: the right shape or nearly, any dtype, any values."""
    shapes = st.sampled_from([(3, 64, 64), (64, 64, 3), (1, 3, 64, 64), (4, 64, 64), (3, 64, 63),
                              (3, 32, 32), (64, 64), (3, 64, 64, 1)])
    values = st.floats(allow_nan=True, allow_infinity=True, width=32)
    return st.one_of(
        arrays(np.float32, shapes, elements=values),
        arrays(np.float32, st.just((3, 64, 64)), elements=st.floats(-0.5, 1.5, width=32)),
        arrays(np.float32, st.just((3, 64, 64)), elements=st.floats(0, 1, width=32)),
        arrays(st.sampled_from([np.float64, np.float16, np.uint8, np.int64]), st.just((3, 64, 64))))


@SETTINGS
@given(frame=frames_near_the_model_shape())
def test_any_frame_is_predicted_or_refused_without_advancing_the_state(predictor, frame):
    stream = predictor.new_stream()
    try:
        prediction = predictor.step(stream, frame)
    except FrameFormatError as err:
        assert str(err).startswith("tensor 'frame': ")
        assert stream.steps == 0
        assert all(not np.any(v) for v in stream.state().values()), "a refused frame moved state"
        return
    valid = frame.shape == (3, 64, 64) and frame.dtype == np.float32 \
        and np.all(np.isfinite(frame)) and frame.min() >= 0 and frame.max() <= 1
    assert valid, f"accepted a frame it should refuse: {frame.dtype} {frame.shape}"
    assert prediction.shape == (3, 64, 64) and np.all(np.isfinite(prediction))
    assert stream.steps == 1
