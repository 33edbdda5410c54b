"""A real tritonserver (the nvidia-pytriton wheel's) serving the repository `stae triton
--backend python` writes: sequences interleaved over gRPC equal the same streams run alone in
the runtime, a bad request is refused by name while the others go on, and a restarted server
refuses a sequence it has no state for. Localhost only; each server stops with its test."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from stae_deploy.export.to_onnx import ExportSettings, export_onnx
from stae_deploy.runtime.errors import ConfigError, SequenceLostError, StaeError
from stae_deploy.runtime.frames import bgr_to_model_frame
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.serving.camera_routing import server_for
from stae_deploy.serving.triton_client import (SequenceRequest, TritonSequenceClient,
                                               served_model)
from stae_deploy.serving.triton_predictor import ServedPredictor
from stae_deploy.serving.triton_python_repository import write_python_repository
from stae_deploy.serving.triton_repository import TritonOptions
from stae_deploy.serving.triton_server import (ServerSettings, TritonServer, bundled_server_dir,
                                               free_ports)
from stae_deploy.stae_ref.footage import fetch

from conftest import SMALL_CONFIG, random_provenance, seeded_model

pytestmark = pytest.mark.integration
STAE = str(Path(sys.executable).parent / "stae")
MAX_ABS = 1e-6          # Triton vs the runtime alone, per prediction
FRAMES_PER_SEQUENCE = 12


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """SMALL_CONFIG (dynamic batch, seeded weights) in a Python-backend repository."""
    folder = tmp_path_factory.mktemp("triton_server")
    model = seeded_model(SMALL_CONFIG)
    onnx_path = folder / "small_dyn.onnx"
    export_onnx(model, onnx_path, random_provenance(model), ExportSettings(dynamic_batch=True))
    write_python_repository(onnx_path, folder / "repo", TritonOptions(max_batch=8), threads=1)
    return folder / "repo"


def settings(repository: Path) -> ServerSettings:
    http_port, grpc_port, metrics_port = free_ports(3)
    return ServerSettings(repository, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port)


def clip_frames(name: str, count: int, first: int = 0) -> list[np.ndarray]:
    """``count`` model frames (3, 64, 64) of a real clip from frame ``first`` on."""
    capture = cv2.VideoCapture(str(fetch(name)))
    frames = []
    for index in range(first + count):
        ok, image = capture.read()
        assert ok, f"{name}: frame {index} unreadable"
        if index >= first:
            frames.append(bgr_to_model_frame(image, SMALL_CONFIG.frame_size))
    capture.release()
    return frames


def alone(repository: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    """The predictions of ``frames`` streamed alone through the runtime (one stream)."""
    predictor = Predictor.load(repository / "stae" / "1" / "stae.onnx", threads=1)
    stream = predictor.new_stream()
    return [predictor.step(stream, frame) for frame in frames]


def test_interleaved_sequences_equal_each_stream_alone(repository):
    model = served_model(repository, "stae")
    # Four cameras; camera 4 ends after 5 frames and starts again as a new sequence.
    streams = {1: clip_frames("carphone", FRAMES_PER_SEQUENCE),
               2: clip_frames("city", FRAMES_PER_SEQUENCE),
               3: clip_frames("motion", FRAMES_PER_SEQUENCE),
               4: clip_frames("carphone", 5, first=40),
               5: clip_frames("city", FRAMES_PER_SEQUENCE - 5, first=60)}
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def send(url: str, sequence_ids: list[int]) -> None:
        try:
            with TritonSequenceClient(url, model) as client:
                for sequence_id in sequence_ids:
                    frames = streams[sequence_id]
                    got[sequence_id] = [client.infer(SequenceRequest(
                        frame[None], sequence_id, start=k == 0, end=k == len(frames) - 1))
                        for k, frame in enumerate(frames)]
        except BaseException as err:        # reported by the main thread
            errors.append(err)

    with TritonServer(settings(repository)) as server:
        assert "successfully loaded 'stae'" in server.log_text()
        threads = [threading.Thread(target=send, args=(server.grpc_url, ids))
                   for ids in ([1], [2], [3], [4, 5])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for sequence_id, frames in streams.items():
        for k, (served, expected) in enumerate(zip(got[sequence_id], alone(repository, frames))):
            error = float(np.abs(served[None] - expected).max())
            assert error <= MAX_ABS, f"sequence {sequence_id}, request {k}: max abs {error:.3g}"


def test_bad_request_is_refused_by_name_and_restart_needs_a_new_sequence(repository):
    model = served_model(repository, "stae")
    frames = clip_frames("city", 4)
    run = settings(repository)
    with TritonServer(run) as server, TritonSequenceClient(server.grpc_url, model) as client:
        client.infer(SequenceRequest(frames[0][None], 7, start=True, end=False))
        wrong = np.zeros((1, 3, 32, 64), np.float32)
        with pytest.raises(StaeError, match="frame") as refused:
            client.infer(SequenceRequest(wrong, 8, start=True, end=False))
        assert "[1,3,32,64]" in str(refused.value).replace(" ", "")
        second = client.infer(SequenceRequest(frames[1][None], 7, start=False, end=False))
    np.testing.assert_allclose(second, alone(repository, frames[:2])[1], rtol=0, atol=MAX_ABS)

    with TritonServer(run) as server, TritonSequenceClient(server.grpc_url, model) as client:
        with pytest.raises(StaeError, match="sequence 7") as lost:
            client.infer(SequenceRequest(frames[2][None], 7, start=False, end=False))
        restarted = [client.infer(SequenceRequest(frame[None], 7, start=k == 0, end=k == 1))
                     for k, frame in enumerate(frames[2:])]
    print(f"after a restart: {lost.value}")
    for served, expected in zip(restarted, alone(repository, frames[2:])):
        assert float(np.abs(served - expected).max()) <= MAX_ABS


def test_server_refuses_a_taken_port_and_a_missing_repository(repository, tmp_path):
    bundled_server_dir()                   # installed by `make install`
    run = settings(repository)
    with TritonServer(run):
        grpc_port, metrics_port = free_ports(2)
        with pytest.raises(ConfigError, match=f"http_port: port {run.http_port} on 127.0.0.1 "
                                              f"is taken"):
            TritonServer(ServerSettings(repository, http_port=run.http_port,
                                        grpc_port=grpc_port, metrics_port=metrics_port))
    with pytest.raises(ConfigError, match="expected a model repository directory"):
        TritonServer(settings(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="three different ports"):
        ServerSettings(repository, http_port=9000, grpc_port=9000, metrics_port=9001)


def test_stae_triton_and_stae_serve_from_the_command_line(repository, tmp_path):
    onnx_path = repository / "stae" / "1" / "stae.onnx"
    written = subprocess.run([STAE, "triton", str(onnx_path), "-o", str(tmp_path / "repo"),
                              "--backend", "python", "--model-name", "cams", "--threads", "1"],
                             capture_output=True, text=True, check=True)
    assert json.loads(written.stdout)["backend"] == "python"
    ports = [str(port) for port in free_ports(3)]
    server = subprocess.Popen([STAE, "serve", str(tmp_path / "repo"), "--http-port", ports[0],
                               "--grpc-port", ports[1], "--metrics-port", ports[2]],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        endpoints = json.loads(server.stdout.readline())
        assert endpoints["grpc"] == f"127.0.0.1:{ports[1]}"
        model = served_model(tmp_path / "repo", "cams")
        with TritonSequenceClient(endpoints["grpc"], model) as client:
            frame = clip_frames("city", 1)[0]
            served = client.infer(SequenceRequest(frame[None], 1, start=True, end=True))
        np.testing.assert_allclose(served, alone(repository, [frame])[0], rtol=0, atol=MAX_ABS)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()


def metrics_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def inference_count(server: TritonServer) -> int:
    """Requests the server's model has answered (Triton's statistics endpoint)."""
    with urllib.request.urlopen(f"{server.http_url}/v2/models/stae/stats", timeout=10) as answer:
        [stats] = json.load(answer)["model_stats"]
    return int(stats["inference_stats"]["success"]["count"])


def test_stae_run_routes_cameras_over_two_servers_and_equals_a_local_run(repository, tmp_path):
    clips = [str(fetch(name)) for name in ("carphone", "city", "motion")]
    common = ["--max-frames", "20", "--quiet", "--force"]
    for clip in clips:
        common += ["--input", clip]
    local = subprocess.run([STAE, "run", str(repository / "stae" / "1" / "stae.onnx"),
                            "--threads", "1", "--metrics", str(tmp_path / "local.jsonl"),
                            *common], capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    with TritonServer(settings(repository)) as first, TritonServer(settings(repository)) as second:
        servers = {first.grpc_url: first, second.grpc_url: second}
        served = subprocess.run([STAE, "run", "--server", f"grpc://{first.grpc_url}",
                                 "--server", f"grpc://{second.grpc_url}/stae",
                                 "--metrics", str(tmp_path / "served.jsonl"), *common],
                                capture_output=True, text=True)
        assert served.returncode == 0, served.stderr
        counts = {url: inference_count(server) for url, server in servers.items()}
    summary = json.loads(served.stdout.splitlines()[-1])
    # Every model step of a camera (a repeated frame is none), plus the END request that
    # closes its sequence, went to the server its name routes to.
    expected = Counter()
    for index, clip in enumerate(clips):
        steps = [r for r in metrics_lines(tmp_path / f"local.{index}.jsonl") if not r["repeated"]]
        expected[server_for(clip, list(servers))] += len(steps) + 1
    assert counts == {url: expected[url] for url in servers}
    assert min(expected.values()) > 0                   # the three cameras use both servers
    for index, clip in enumerate(clips):
        ours = metrics_lines(tmp_path / f"served.{index}.jsonl")
        theirs = metrics_lines(tmp_path / f"local.{index}.jsonl")
        assert len(ours) == len(theirs) == 20
        for step, (a, b) in enumerate(zip(ours, theirs)):
            for key in ("psnr_db", "copy_last_psnr_db", "repeated", "state_lost"):
                assert a.get(key) == b.get(key), f"{clip} step {step}: {key} {a.get(key)} vs " \
                                                 f"{b.get(key)}"
        assert summary["streams"][index]["state_losses"] == 0


def test_a_dead_server_stops_the_stream_clearly_and_a_restarted_one_gets_a_fresh_sequence(
        repository):
    frames = clip_frames("city", 6)
    run = settings(repository)
    lines: list[str] = []
    server = TritonServer(run)
    try:
        with ServedPredictor.connect([f"grpc://{server.grpc_url}"]) as model:
            stream = model.new_stream("city")
            for frame in frames[:2]:
                model.step_many([stream], [frame])
            server.process.kill()                          # dies between two requests
            server.process.wait()
            with pytest.raises(SequenceLostError) as dead:
                model.step_many([stream], [frames[2]])
    finally:
        server.stop()
    print(f"dead server: {dead.value}")
    assert "unreachable" in str(dead.value) and "pass --reconnect-attempts N" in str(dead.value)

    with TritonServer(run) as server:
        model = ServedPredictor.connect([f"grpc://{server.grpc_url}"], reconnect_attempts=2,
                                        backoff_s=0.1, log=lines.append)
        stream = model.new_stream("city")
        before = [model.step_many([stream], [frame])[0] for frame in frames[:2]]
    with TritonServer(run):                    # the same ports; no state for the old sequence
        after = [model.step_many([stream], [frame])[0] for frame in frames[2:]]
        model.close()
    print("\n".join(lines))
    assert "must specify the START flag" in lines[0] and "reconnecting" in lines[0]
    assert "a fresh sequence" in lines[1]
    assert stream.state_losses == 1
    for k, (got, expected) in enumerate(zip(before + after, alone(repository, frames[:2])
                                            + alone(repository, frames[2:]))):
        error = float(np.abs(got - expected).max())
        assert error <= MAX_ABS, f"step {k}: max abs {error:.3g} vs a fresh stream"
