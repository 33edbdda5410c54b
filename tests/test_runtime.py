"""The streaming runtime: device-resident ping-pong state, forecasts, sources that drop stale
frames and reconnect, and clear errors for every bad input."""
import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from stae_deploy.runtime.artifact import write_engine_sidecar
from stae_deploy.runtime.backends.base import Backend
from stae_deploy.runtime.errors import (ArtifactError, FrameFormatError, NonFiniteStateError, SourceError,
                            SpecMismatchError)
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_stream
from stae_deploy.serving.triton_server import free_ports
from stae_deploy.stae_ref.footage import fetch, load_clip

from conftest import SMALL_CONFIG, requires_cuda, requires_tensorrt


@pytest.fixture(scope="module")
def carphone_64():
    return load_clip("carphone", SMALL_CONFIG.frame_size)          # (120, 3, 64, 64)


def test_iobinding_ping_pong_is_bit_identical_to_session_run(small_onnx_path, carphone_64):
    path, _ = small_onnx_path
    predictor, plain = Predictor.load(path), OnnxStepper(path)
    stream, state = predictor.new_stream(), plain.zero_state()
    for step in range(50):
        ours = predictor.step(stream, carphone_64[step])
        theirs, state, _ = plain.step(carphone_64[step][None], state)
        np.testing.assert_array_equal(ours, theirs[0], err_msg=f"step {step + 1}: prediction")
    assert stream.steps == 50


def test_predictor_matches_the_reference_within_export_tolerances(small_onnx_path, carphone_64):
    path, model = small_onnx_path
    predictor = Predictor.load(path)
    stream, ref_state = predictor.new_stream(), model.zero_state()
    for step in range(50):
        ours = predictor.step(stream, carphone_64[step])
        with torch.no_grad():
            reference, ref_state = model.step(torch.from_numpy(carphone_64[step][None]), ref_state)
        reference = reference[0].numpy()
        if step == 0:
            relative = np.max(np.abs(ours - reference)) / max(1.0, np.max(np.abs(reference)))
            assert relative <= 1e-4, f"step 1: prediction relative error {relative:.2e}"
        assert psnr_db(ours, reference) >= 60.0, f"step {step + 1}: PSNR vs reference < 60 dB"


def test_forecast_leaves_the_real_state_untouched(small_onnx_path, carphone_64):
    path, _ = small_onnx_path
    predictor, plain = Predictor.load(path), OnnxStepper(path)
    forecasting, steady = predictor.new_stream(), predictor.new_stream()
    for step in range(4):
        future = predictor.step(forecasting, carphone_64[step], horizon=3)
        plain_next = predictor.step(steady, carphone_64[step])
        np.testing.assert_array_equal(future[0], plain_next, err_msg=f"step {step + 1}")
    assert future.shape == (3, 3, 64, 64)
    # The closed loop equals session.run fed its own predictions from the same state.
    state = plain.zero_state()
    for step in range(4):
        prediction, state, _ = plain.step(carphone_64[step][None], state)
    for k in (1, 2):
        prediction, state, _ = plain.step(prediction, state)
        np.testing.assert_array_equal(future[k], prediction[0], err_msg=f"horizon {k + 1}")


@pytest.mark.parametrize("frame, message", [
    (np.zeros((3, 32, 32), np.float32), r"'frame': got shape \(3, 32, 32\), expected \(3, 64, 64\)"),
    (np.zeros((64, 64, 3), np.uint8), r"a camera frame\? convert it with stae_deploy.runtime.frames"),
    (np.zeros((1, 64, 64), np.float32), r"'frame': got shape \(1, 64, 64\)"),
    (np.zeros((3, 64, 64), np.float64), r"'frame': got dtype float64, expected float32"),
    ([[0.0]], r"'frame': expected a numpy array, got list"),
])
def test_bad_frames_name_the_tensor(small_onnx_path, frame, message):
    predictor = Predictor.load(small_onnx_path[0])
    with pytest.raises(FrameFormatError, match=message):
        predictor.step(predictor.new_stream(), frame)


def test_nan_is_caught_the_stream_reset_and_counted(small_onnx_path, carphone_64):
    predictor = Predictor.load(small_onnx_path[0])
    stream, fresh = predictor.new_stream(), predictor.new_stream()
    predictor.step(stream, carphone_64[0])
    poisoned = stream.state()
    poisoned["hidden"].flat[123] = np.nan               # a NaN that got into the state
    stream.load_state(poisoned)
    with pytest.raises(NonFiniteStateError, match=r"step 2: .*NaN/Inf; the stream's state was reset "
                                                  r"\(1 such reset"):
        predictor.step(stream, carphone_64[1])
    assert stream.nonfinite_resets == 1 and stream.steps == 0
    np.testing.assert_array_equal(predictor.step(stream, carphone_64[2]),
                                  predictor.step(fresh, carphone_64[2]))


def test_a_nan_frame_is_refused_before_the_state_advances(small_onnx_path, carphone_64):
    predictor = Predictor.load(small_onnx_path[0])
    stream = predictor.new_stream()
    poisoned = carphone_64[1].copy()
    poisoned[0, 10, 10] = np.nan
    with pytest.raises(FrameFormatError, match=r"tensor 'frame': values span \[nan, nan\], "
                                               r"expected finite values in \[0, 1\]"):
        predictor.step(stream, poisoned)
    assert stream.steps == 0 and all(np.all(v == 0) for v in stream.state().values())


def test_artifacts_that_lie_are_refused(small_onnx_path, tmp_path):
    from stae_deploy.export.onnx_graph import load_model, read_metadata, save_model, write_metadata
    from stae_deploy.runtime.artifact import ArtifactMetadata
    from stae_deploy.stae_ref.config import STAEConfig
    from stae_deploy.stae_ref.state_spec import io_spec

    path, _ = small_onnx_path
    graph = load_model(path)
    other = STAEConfig.from_dict({**SMALL_CONFIG.to_dict(), "layers": 2})
    write_metadata(graph, ArtifactMetadata(spec=io_spec(other), config=other.to_dict()))
    with pytest.raises(SpecMismatchError, match=r"input 'hidden': graph shape \(1, 3, 8"):
        Predictor.load(save_model(graph, tmp_path / "layers2.onnx").path)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="truncated.onnx: it begins like an ONNX model but does not parse"):
        Predictor.load(truncated)
    engine = tmp_path / "stae.engine"
    engine.write_bytes(b"\x00" * 4096)
    write_engine_sidecar(engine, read_metadata(load_model(path), "x"),
                         {"engine_sha256": "0" * 64})
    with pytest.raises(ArtifactError, match="stae.engine: its sha256 differs from the one its "
                                            "sidecar recorded"):
        Predictor.load(engine)
    with pytest.raises(ArtifactError, match="missing.engine: no such engine file"):
        Predictor.load(tmp_path / "missing.engine")


class SlowBackend(Backend):
    """The real backend, made slower than the camera (a deliberately slow device)."""

    def __init__(self, inner: Backend, delay_s: float):
        self.inner, self.metadata, self.delay_s = inner, inner.metadata, delay_s

    def new_state_set(self, batch=1):
        return self.inner.new_state_set(batch)

    def zero(self, state, row=None):
        self.inner.zero(state, row)

    def copy_row(self, source, source_row, target, target_row):
        self.inner.copy_row(source, source_row, target, target_row)

    def read_row(self, state, row):
        return self.inner.read_row(state, row)

    def write_row(self, state, row, values):
        self.inner.write_row(state, row, values)

    def run(self, frames, inputs, outputs):
        time.sleep(self.delay_s)
        return self.inner.run(frames, inputs, outputs)


def test_a_slow_step_drops_stale_frames_instead_of_lagging(small_onnx_path):
    """carphone paced at 29.97 fps (33 ms/frame) through a 150 ms step for 2 s of video."""
    slow = Predictor(SlowBackend(Predictor.load(small_onnx_path[0]).backend, 0.15))
    config = SourceConfig(str(fetch("carphone")), realtime=True)
    with FrameGrabber(config, log=lambda _: None) as grabber:
        summary = run_stream(slow, grabber, RunOptions(max_frames=12))
    assert summary.dropped_frames >= 30                 # ~4 of every 5 frames never waited
    # A frame waits at most one step for the consumer: bounded, not growing.
    assert max(summary.latency_ms) < 150 + 150 + 100, summary.latency_ms
    assert summary.latency_ms[-1] < 2 * summary.latency_ms[1] + 50


def test_every_file_frame_is_processed_when_not_realtime(small_onnx_path):
    predictor = Predictor.load(small_onnx_path[0])
    with FrameGrabber(SourceConfig(str(fetch("carphone"))), log=lambda _: None) as grabber:
        summary = run_stream(predictor, grabber, RunOptions())
    assert summary.steps == 120 and summary.dropped_frames == 0
    assert len(summary.psnr_db) == 119


def test_loop_restarts_the_file_and_resets_the_state(small_onnx_path):
    predictor = Predictor.load(small_onnx_path[0])
    with FrameGrabber(SourceConfig(str(fetch("carphone")), loop=True), log=lambda _: None) as g:
        summary = run_stream(predictor, g, RunOptions(max_frames=130))
    assert summary.steps == 130 and summary.resets == 1


def test_a_truncated_file_reconnects_and_resets_when_it_comes_back(small_onnx_path, tmp_path):
    video = tmp_path / "camera.mp4"
    shutil.copy(fetch("carphone"), video)
    original = video.read_bytes()
    messages: list[str] = []
    predictor = Predictor.load(small_onnx_path[0])

    def cut_then_restore(grabber):
        while grabber.frame_count and len(messages) == 0 and not grabber_done.is_set():
            time.sleep(0.01)
        time.sleep(0.2)
        video.write_bytes(original)

    grabber_done = threading.Event()
    config = SourceConfig(str(video), realtime=True, reconnect_attempts=3, backoff_s=0.5)
    with FrameGrabber(config, log=messages.append) as grabber:
        os.truncate(video, len(original) // 5)
        restorer = threading.Thread(target=cut_then_restore, args=(grabber,))
        restorer.start()
        summary = run_stream(predictor, grabber, RunOptions(max_frames=60))
        grabber_done.set()
        restorer.join()
    assert summary.resets == 1 and grabber.reconnects == 1
    assert any("lost after frame" in m for m in messages)
    assert any("reconnected" in m and "state is reset" in m for m in messages)


def test_a_vanished_file_ends_with_a_clear_error(small_onnx_path, tmp_path):
    video = tmp_path / "camera.mp4"
    shutil.copy(fetch("carphone"), video)
    config = SourceConfig(str(video), realtime=True, reconnect_attempts=2, backoff_s=0.05)
    predictor = Predictor.load(small_onnx_path[0])
    with FrameGrabber(config, log=lambda _: None) as grabber:
        os.truncate(video, video.stat().st_size // 5)
        with pytest.raises(SourceError, match=r"camera.mp4: the source disappeared after frame "
                                              r"\d+ and did not come back after 2 reconnect"):
            run_stream(predictor, grabber, RunOptions())


def test_rtsp_with_nothing_listening_retries_then_fails_clearly(small_onnx_path, capsys):
    from stae_deploy.cli.main import main

    url = f"rtsp://127.0.0.1:{free_ports(1)[0]}/camera"
    assert main(["run", str(small_onnx_path[0]), "--input", url, "--reconnect-attempts", "2",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot be opened; reconnecting (up to 2 attempts)" in err
    assert f"{url}: could not be opened after 2 reconnect attempts (last: " in err
    assert "Traceback" not in err


def test_show_without_a_gui_is_refused(small_onnx_path, capsys):
    import cv2

    from stae_deploy.cli.main import main

    if "NONE" not in [l for l in cv2.getBuildInformation().splitlines() if "GUI:" in l][0]:
        pytest.skip("this OpenCV has a GUI")
    assert main(["run", str(small_onnx_path[0]), "--input", str(fetch("carphone")), "--show"]) == 2
    assert "--show: this OpenCV has no GUI" in capsys.readouterr().err


def test_missing_file_and_gstreamer_without_support(small_onnx_path, tmp_path):
    with pytest.raises(SourceError, match="nothere.mp4: no such video file"):
        FrameGrabber(SourceConfig(str(tmp_path / "nothere.mp4")))
    with pytest.raises(SourceError, match="this OpenCV has no GStreamer support"):
        FrameGrabber(SourceConfig("videotestsrc ! appsink", reconnect_attempts=0))


def test_stae_run_writes_video_metrics_and_latency_plot(small_onnx_path, tmp_path, capsys):
    import json

    import cv2

    from stae_deploy.cli.main import main

    out = {name: tmp_path / name for name in ("run.mp4", "metrics.jsonl", "latency.png")}
    assert main(["run", str(small_onnx_path[0]), "--input", str(fetch("carphone")),
                 "--max-frames", "10", "--horizon", "2", "-o", str(out["run.mp4"]),
                 "--metrics", str(out["metrics.jsonl"]), "--latency-plot",
                 str(out["latency.png"]), "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 10 and summary["dropped_frames"] == 0
    records = [json.loads(line) for line in out["metrics.jsonl"].read_text().splitlines()]
    assert len(records) == 10
    assert {"preprocess_ms", "infer_ms", "postprocess_ms", "capture_to_prediction_ms",
            "dropped_frames"} <= set(records[0])
    assert "psnr_db" in records[1] and "copy_last_psnr_db" in records[1]
    video = cv2.VideoCapture(str(out["run.mp4"]))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 9
    assert int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 3 * 64
    assert cv2.imread(str(out["latency.png"])) is not None
    assert main(["run", str(small_onnx_path[0]), "--input", str(fetch("carphone")),
                 "-o", str(out["run.mp4"])]) == 2
    assert "run.mp4 already exists; pass --force" in capsys.readouterr().err


@requires_tensorrt
@requires_cuda
def test_tensorrt_engine_matches_onnxruntime_step_after_step(small_onnx_path, carphone_64, tmp_path):
    from stae_deploy.export.build_engine import BuildConfig, build_engine

    engine = build_engine(small_onnx_path[0], tmp_path / "small.engine", BuildConfig())
    for cuda_graphs in (False, True):
        trt_predictor = Predictor.load(engine, cuda_graphs=cuda_graphs)
        ort_predictor = Predictor.load(small_onnx_path[0])
        trt_stream, ort_stream = trt_predictor.new_stream(), ort_predictor.new_stream()
        for step in range(10):
            ours = trt_predictor.step(trt_stream, carphone_64[step])
            theirs = ort_predictor.step(ort_stream, carphone_64[step])
            np.testing.assert_allclose(ours, theirs, atol=1e-3, err_msg=f"step {step + 1}")


def test_demo_report_aligns_the_deployed_model_with_the_reference(small_onnx_path, tmp_path, capsys):
    """`stae run` (onnxruntime) and `stae predict` (PyTorch) of the same weights on the same clip
    must score the same per frame: the report lines them up."""
    from stae_deploy.cli.main import main

    config = tmp_path / "small.json"
    config.write_text(SMALL_CONFIG.to_json())
    assert main(["predict", "--config", str(config), "--clip", "carphone", "--max-frames", "20",
                 "--output-dir", str(tmp_path)]) == 0
    assert main(["run", str(small_onnx_path[0]), "--input", str(fetch("carphone")),
                 "--max-frames", "20", "--metrics", str(tmp_path / "m.jsonl"), "--quiet"]) == 0
    assert main(["report", "--metrics", str(tmp_path / "m.jsonl"), "--reference",
                 str(tmp_path / "reference_psnr.json"), "--held-out-from", "15",
                 "--output-dir", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert summary[0] == "clip: carphone, frame size [64, 64], 19 scored steps"
    import re

    deployed, reference = map(float, re.search(r"deployed ([\d.]+) dB, reference ([\d.]+) dB",
                                               summary[1]).groups())
    assert deployed == pytest.approx(reference, abs=0.01)
    assert summary[2].startswith("held-out frames (>= 15)")
    assert (tmp_path / "demo_psnr.png").stat().st_size > 0
