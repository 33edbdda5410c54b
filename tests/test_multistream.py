"""Many cameras on one model: streams batched into one step keep their own state. Each stream's
predictions equal that stream run alone, while other streams sit steps out, reset, leave, join,
or blow up with NaN."""
import numpy as np
import pytest

from stae_deploy.runtime.errors import ConfigError, NonFiniteStateError
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.stae_ref.footage import load_clip

ISOLATION_MAX_ABS = 1e-6      # a stream batched with others vs the same stream alone
STEPS = 100


@pytest.fixture(scope="module")
def four_videos():
    """Four different real sequences at the demo size, 100 frames each: (4, 100, 3, 128, 128)."""
    carphone = load_clip("carphone", (128, 128), max_frames=STEPS)
    city = load_clip("city", (128, 128), max_frames=STEPS)
    motion = load_clip("motion", (128, 128), max_frames=STEPS)
    return np.stack([carphone, city, motion, carphone[::-1].copy()])


# Per step, which streams get a frame; the rest sit the step out (their state must not advance).
def has_frame(stream: int, step: int) -> bool:
    if stream == 3:
        return step % 7 != 3                  # a slower camera: misses one frame in seven
    if stream == 2:
        return not 40 <= step < 50            # leaves at step 40, rejoins at 50 after a reset
    return True


RESET_AT = {(2, 50), (1, 70)}                 # (stream, step): scene cut / reconnect


def run_batched(predictor, videos):
    """Every scheduled frame of every stream through batched steps: {stream: [prediction]}."""
    streams = [predictor.new_stream() for _ in videos]
    predictions = {i: [] for i in range(len(videos))}
    for step in range(STEPS):
        for i, stream in enumerate(streams):
            if (i, step) in RESET_AT:
                stream.reset()
        active = [i for i in range(len(videos)) if has_frame(i, step)]
        results = predictor.step_many([streams[i] for i in active],
                                      [videos[i][step] for i in active])
        for i, result in zip(active, results):
            assert not isinstance(result, NonFiniteStateError), f"step {step + 1} stream {i}"
            predictions[i].append(result[0])
    return predictions, streams


def run_alone(predictor, video, stream_index):
    stream, predictions = predictor.new_stream(), []
    for step in range(STEPS):
        if (stream_index, step) in RESET_AT:
            stream.reset()
        if has_frame(stream_index, step):
            predictions.append(predictor.step(stream, video[step]))
    return predictions, stream


def assert_same_predictions(batched, alone, stream_index):
    assert len(batched) == len(alone), f"stream {stream_index}: step count"
    for k, (ours, theirs) in enumerate(zip(batched, alone)):
        error = float(np.max(np.abs(ours - theirs)))
        assert error <= ISOLATION_MAX_ABS, (f"stream {stream_index}, its step {k + 1}: prediction "
                                            f"differs from the stream run alone by {error:.2e}")


def test_four_batched_streams_each_equal_the_stream_run_alone(demo_dynamic_onnx_path,
                                                              four_videos):
    predictor = Predictor.load(demo_dynamic_onnx_path)
    batched, streams = run_batched(predictor, four_videos)
    for i in range(4):
        alone, solo_stream = run_alone(predictor, four_videos[i], i)
        assert_same_predictions(batched[i], alone, i)
        for name, value in streams[i].state().items():
            error = float(np.max(np.abs(value - solo_stream.state()[name])))
            assert error <= ISOLATION_MAX_ABS, f"stream {i}: final state '{name}' off by {error:.2e}"
    assert [s.steps for s in streams] == [STEPS, STEPS - 70, STEPS - 50,
                                          sum(has_frame(3, t) for t in range(STEPS))]


def test_a_nan_in_one_stream_resets_it_and_leaves_the_others_untouched(demo_dynamic_onnx_path,
                                                                       four_videos):
    predictor = Predictor.load(demo_dynamic_onnx_path)
    streams = [predictor.new_stream() for _ in range(4)]
    alone = [predictor.new_stream() for _ in range(4)]
    for step in range(6):
        if step == 3:
            poisoned = streams[1].state()
            poisoned["temporal_ring"].flat[1000] = np.nan
            streams[1].load_state(poisoned)
        results = predictor.step_many(streams, [video[step] for video in four_videos])
        for i in (0, 2, 3):
            solo = predictor.step(alone[i], four_videos[i][step])
            assert float(np.max(np.abs(results[i][0] - solo))) <= ISOLATION_MAX_ABS, \
                f"step {step + 1}: stream {i} was disturbed by stream 1's NaN"
        if step == 3:
            assert isinstance(results[1], NonFiniteStateError)
            assert "the stream's state was reset (1 such reset" in str(results[1])
    assert streams[1].nonfinite_resets == 1 and streams[1].steps == 2   # restarted at step 5
    assert all(s.nonfinite_resets == 0 for i, s in enumerate(streams) if i != 1)


def test_batched_forecasts_equal_each_stream_forecasting_alone(demo_dynamic_onnx_path,
                                                               four_videos):
    predictor = Predictor.load(demo_dynamic_onnx_path)
    streams = [predictor.new_stream() for _ in range(3)]
    alone = [predictor.new_stream() for _ in range(3)]
    for step in range(4):
        results = predictor.step_many(streams, [v[step] for v in four_videos[:3]], horizon=3)
        for i in range(3):
            solo = predictor.step(alone[i], four_videos[i][step], horizon=3)
            assert results[i].shape == (3, 3, 128, 128)
            assert float(np.max(np.abs(results[i] - solo))) <= ISOLATION_MAX_ABS, \
                f"step {step + 1}: stream {i}'s forecast"
    # The forecasts did not move the real state: one more plain step still agrees.
    frames = [v[4] for v in four_videos[:3]]
    for i, result in enumerate(predictor.step_many(streams, frames)):
        assert float(np.max(np.abs(result[0] - predictor.step(alone[i], frames[i])))) <= 1e-6


def test_max_batch_splits_the_streams_into_several_runs(demo_dynamic_onnx_path, four_videos):
    whole = Predictor.load(demo_dynamic_onnx_path)
    pairs = Predictor.load(demo_dynamic_onnx_path, max_batch=2)
    one_by_one = Predictor.load(demo_dynamic_onnx_path, max_batch=1)
    outputs = []
    for predictor in (whole, pairs, one_by_one):
        streams = [predictor.new_stream() for _ in range(3)]
        for step in range(3):
            results = predictor.step_many(streams, [v[step] for v in four_videos[:3]])
        outputs.append(np.stack([r[0] for r in results]))
    assert float(np.max(np.abs(outputs[0] - outputs[1]))) <= ISOLATION_MAX_ABS
    assert float(np.max(np.abs(outputs[0] - outputs[2]))) <= ISOLATION_MAX_ABS


def test_a_static_batch_one_model_steps_its_streams_one_at_a_time(small_onnx_path):
    predictor = Predictor.load(small_onnx_path[0])
    assert predictor.max_batch == 1
    clip = load_clip("carphone", (64, 64), max_frames=3)
    streams, alone = [predictor.new_stream() for _ in range(2)], predictor.new_stream()
    for step in range(3):
        results = predictor.step_many(streams, [clip[step], clip[step]])
        np.testing.assert_array_equal(results[0], results[1])
        np.testing.assert_array_equal(results[0][0], predictor.step(alone, clip[step]))


def test_stream_mistakes_are_refused_by_name(demo_dynamic_onnx_path, small_onnx_path,
                                             four_videos):
    predictor = Predictor.load(demo_dynamic_onnx_path)
    stream, frame = predictor.new_stream(), four_videos[0][0]
    with pytest.raises(ConfigError, match="a stream appears twice"):
        predictor.step_many([stream, stream], [frame, frame])
    with pytest.raises(ConfigError, match="2 streams but 1 frames"):
        predictor.step_many([stream, predictor.new_stream()], [frame])
    with pytest.raises(ConfigError, match="a stream belongs to another predictor"):
        predictor.step_many([Predictor.load(demo_dynamic_onnx_path).new_stream()], [frame])
    with pytest.raises(ConfigError, match=r"max_batch: expected 1 to 1 .* got 4"):
        Predictor.load(small_onnx_path[0], max_batch=4)
    assert stream.steps == 0


def test_stae_run_with_several_inputs_writes_one_output_set_per_stream(demo_dynamic_onnx_path,
                                                                       tmp_path, capsys):
    import json

    from stae_deploy.cli.main import main
    from stae_deploy.stae_ref.footage import fetch

    carphone, motion = str(fetch("carphone")), str(fetch("motion"))
    assert main(["run", str(demo_dynamic_onnx_path), "--input", carphone, "--input", motion,
                 "--output", str(tmp_path / "out.mp4"), "--metrics", str(tmp_path / "m.jsonl"),
                 "--max-frames", "12", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["input"] for s in result["streams"]] == [carphone, motion]
    assert [s["steps"] for s in result["streams"]] == [12, 12]
    assert result["throughput"]["frames"] == 24 and result["throughput"]["frames_per_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.0.jsonl", "m.1.jsonl",
                                                          "out.0.mp4", "out.1.mp4"]
    for i in (0, 1):
        records = [json.loads(line) for line in (tmp_path / f"m.{i}.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records] == list(range(1, 13))
        assert all(r["psnr_db"] > 20 for r in records[1:]), f"stream {i}: PSNR of real predictions"
