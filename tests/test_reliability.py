"""Reliability: bad artifacts, bad sources and output files fail with one clear typed error that
names the file and says what was expected, never a raw onnxruntime/protobuf traceback; outputs
are never silently overwritten, and a killed writer never leaves a file that looks complete.

Everything here is real: onnxruntime sessions, OpenCV captures and writers, loopback sockets and
a SIGKILLed writer process."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from stae_deploy.runtime.artifact import engine_sidecar_path, write_engine_sidecar
from stae_deploy.runtime.errors import ArtifactError, OutputExistsError, SourceError, SpecMismatchError
from stae_deploy.runtime.files import partial_path, refuse_overwrite, sha256_file
from stae_deploy.runtime.media import VideoFileWriter
from stae_deploy.runtime.onnx_session import open_session
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.stae_ref.footage import fetch
from stae_deploy.serving.triton_server import free_ports

REPO = Path(__file__).resolve().parents[1]


def refused(error_type: type[Exception], match: str, path: Path) -> pytest.ExceptionInfo:
    """``Predictor.load(path)`` raises ``error_type`` matching ``match``, naming the path, and
    carrying no onnxruntime/protobuf text or chained traceback."""
    with pytest.raises(error_type, match=match) as info:
        Predictor.load(path)
    message = str(info.value)
    assert str(path) in message, message
    assert "[ONNXRuntimeError]" not in message and "Traceback" not in message, message
    assert "\n" not in message, message                      # the CLI prints one line
    error = info.value      # no chained onnxruntime/json exception is printed under it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    return info


def png_bytes() -> bytes:
    """A real PNG written by OpenCV."""
    ok, encoded = cv2.imencode(".png", np.full((16, 16, 3), 128, np.uint8))
    assert ok
    return encoded.tobytes()


# -- artifacts ------------------------------------------------------------------------------------


def test_zero_byte_onnx_is_refused_as_empty(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    refused(ArtifactError, r"empty.onnx: is empty \(0 bytes\); expected an ONNX model from "
                           r"`stae export`", path)


def test_truncated_onnx_is_refused_as_truncated(small_onnx_path, tmp_path):
    data = small_onnx_path[0].read_bytes()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[:len(data) // 2])
    refused(ArtifactError, rf"half.onnx: it begins like an ONNX model "
                           rf"but does not parse \({len(data) // 2} bytes\): truncated or corrupt",
            path)


@pytest.mark.parametrize("name, content, looks_like", [
    ("image.onnx", png_bytes(), "a PNG image"),
    ("notes.onnx", b"this is not a model\n", "a text file"),
])
def test_a_foreign_file_named_onnx_is_not_an_onnx_model(tmp_path, name, content, looks_like):
    path = tmp_path / name
    path.write_bytes(content)
    refused(ArtifactError, rf"{name}: it looks like {looks_like}, "
                           rf"not an ONNX model \(expected an ONNX model from `stae export`\)",
            path)


def test_unknown_bytes_named_onnx_show_how_they_begin(tmp_path):
    path = tmp_path / "noise.onnx"
    path.write_bytes(b"\x00\x01\x02\x03" + np.random.default_rng(0).bytes(1000))
    refused(ArtifactError, r"noise.onnx: it is not an ONNX model "
                           r"\(it begins with bytes 00 01 02 03", path)


def test_a_directory_named_onnx_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.mkdir()
    refused(ArtifactError, r"model.onnx: is a directory; expected an ONNX model", path)


def test_a_valid_onnx_that_is_not_a_stae_model_is_refused(tmp_path):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "identity.onnx"
    onnx.save(helper.make_model(graph), str(path))
    refused(ArtifactError, r"identity.onnx: metadata keys \['stae.format_version', .*\] are "
                           r"missing; it was not exported by stae-deploy \(expected the state "
                           r"protocol and model config", path)


def _with_edited_protocol(source: Path, target: Path, edit) -> Path:
    """A copy of a real export whose stored protocol JSON went through ``edit``."""
    model = onnx.load(str(source))
    entry = next(p for p in model.metadata_props if p.key == "stae.protocol")
    protocol = json.loads(entry.value)
    edit(protocol)
    entry.value = json.dumps(protocol)
    onnx.save(model, str(target))
    return target


def _state_pair(protocol: dict, name: str) -> dict:
    return next(pair for pair in protocol["state"] if pair["input"]["name"] == name)


def test_a_protocol_that_lies_about_a_state_shape_is_refused(small_onnx_path, tmp_path):
    def widen_hidden(protocol: dict) -> None:
        pair = _state_pair(protocol, "hidden")
        for tensor in (pair["input"], pair["output"]):
            tensor["shape"][2] += 1                            # 8 -> 9 channels

    path = _with_edited_protocol(small_onnx_path[0], tmp_path / "wide.onnx", widen_hidden)
    refused(SpecMismatchError, r"wide.onnx: the stored state protocol does not match the graph: "
                               r"input 'hidden': graph shape \(1, 3, 8, 2, 8, 8\), protocol "
                               r"\(1, 3, 9, 2, 8, 8\); output 'next_hidden'", path)


def test_a_protocol_that_renames_a_state_tensor_is_refused(small_onnx_path, tmp_path):
    def rename_hidden(protocol: dict) -> None:
        _state_pair(protocol, "hidden")["input"]["name"] = "memory"

    path = _with_edited_protocol(small_onnx_path[0], tmp_path / "renamed.onnx", rename_hidden)
    refused(SpecMismatchError, r"renamed.onnx: .*input 'memory' is in the protocol but not in "
                               r"the graph; input 'hidden' is in the graph but not in the "
                               r"protocol", path)


@pytest.fixture
def random_engine(tmp_path) -> Path:
    path = tmp_path / "stae.engine"
    path.write_bytes(np.random.default_rng(1).bytes(64 << 10))
    return path


def test_random_bytes_named_engine_without_a_sidecar(random_engine):
    refused(ArtifactError, r"stae.engine: its sidecar .*stae.engine.json is missing; rebuild the "
                           r"engine with `stae build`", random_engine)


def _real_sidecar(engine: Path, onnx_path: Path, **build) -> Path:
    """The sidecar `stae build` writes for ``onnx_path``, next to ``engine``."""
    metadata = open_session(onnx_path)[1]
    return write_engine_sidecar(engine, metadata, {
        "source_onnx": str(onnx_path), "source_onnx_sha256": sha256_file(onnx_path),
        "tensorrt_version": "10.13.0", **build})


def test_random_engine_with_a_copied_sidecar_is_refused_before_tensorrt(random_engine,
                                                                         small_onnx_path):
    # The sidecar of another (real) engine: its recorded sha256 is not this file's.
    _real_sidecar(random_engine, small_onnx_path[0], engine_sha256=sha256_file(small_onnx_path[0]))
    refused(ArtifactError, r"stae.engine: its sha256 differs from the one its sidecar recorded "
                           r"at build time \([0-9a-f]{12}\.\.\. vs [0-9a-f]{12}\.\.\.; truncated, "
                           r"or replaced by another engine\)", random_engine)


def test_a_sidecar_without_the_engine_sha256_is_refused(random_engine, small_onnx_path):
    _real_sidecar(random_engine, small_onnx_path[0])
    refused(ArtifactError, r"stae.engine: its sidecar records no engine_sha256, so the engine "
                           r"cannot be verified", random_engine)


@pytest.mark.parametrize("garbage, match", [
    ("{not json at all", r"stae.engine.json: the sidecar of stae.engine is not valid JSON \(.*\); "
                         r"expected the JSON `stae build` writes"),
    ("[1, 2, 3]", r"stae.engine.json: not a stae-deploy engine sidecar \(expected a JSON object "
                  r"with 'metadata' and 'build'"),
    ('{"metadata": {}, "build": {}}', r"stae.engine.json: metadata keys .* are missing"),
])
def test_a_garbage_sidecar_is_refused(random_engine, garbage, match):
    engine_sidecar_path(random_engine).write_text(garbage)
    refused(ArtifactError, match, random_engine)


def test_a_zero_byte_engine_is_refused_as_empty(tmp_path):
    path = tmp_path / "empty.engine"
    path.write_bytes(b"")
    refused(ArtifactError, r"empty.engine: is empty \(0 bytes\); expected a TensorRT engine",
            path)


@pytest.mark.parametrize("kind", ["png", "lying protocol"])
def test_stae_run_with_a_bad_model_prints_one_line_and_exits_2(small_onnx_path, tmp_path, capsys,
                                                               kind):
    from stae_deploy.cli.main import main

    if kind == "png":
        model = tmp_path / "bad.onnx"
        model.write_bytes(png_bytes())
        expected = "it looks like a PNG image"
    else:
        model = _with_edited_protocol(small_onnx_path[0], tmp_path / "bad.onnx",
                                      lambda p: _state_pair(p, "hidden")["input"].update(
                                          name="memory"))
        expected = "the stored state protocol does not match the graph: input 'memory'"
    assert main(["run", str(model), "--input", str(fetch("carphone")), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.rstrip("\n")], captured.err   # one line
    assert captured.err.startswith(f"stae run: error: {model}: {expected}"), captured.err


# -- sources --------------------------------------------------------------------------------------


def _fails_at_once(uri: str, match: str) -> None:
    """A file source fails in the constructor, without a reconnect attempt, naming the file."""
    messages: list[str] = []
    started = time.perf_counter()
    with pytest.raises(SourceError, match=match) as info:
        FrameGrabber(SourceConfig(uri, reconnect_attempts=3, backoff_s=1.0), log=messages.append)
    assert time.perf_counter() - started < 1.0, "a bad file must not be retried"
    assert messages == [] and uri in str(info.value)


def test_a_missing_file_source(tmp_path):
    _fails_at_once(str(tmp_path / "nothere.mp4"), r"nothere.mp4: no such video file")


def test_a_zero_byte_mp4(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    _fails_at_once(str(tmp_path / "empty.mp4"),
                   r"empty.mp4: is empty \(0 bytes\); expected a video file")


def test_a_text_file_named_mp4(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video\n" * 20)
    _fails_at_once(str(tmp_path / "notes.mp4"), r"notes.mp4: OpenCV cannot open this file "
                                                r"source: it looks like a text file, not a video")


def test_a_folder_of_pngs(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(3):
        (folder / f"{k:05d}.png").write_bytes(png_bytes())
    _fails_at_once(str(folder), r"frames: is a directory; expected a video file")


def test_rtsp_to_a_closed_port_retries_a_bounded_number_of_times_then_fails(tmp_path):
    url = f"rtsp://127.0.0.1:{free_ports(1)[0]}/stream"
    messages: list[str] = []
    config = SourceConfig(url, reconnect_attempts=2, backoff_s=0.05)
    started = time.perf_counter()
    with pytest.raises(SourceError, match=rf"{url}: could not be opened after 2 reconnect "
                                          rf"attempts \(last: "
                                          rf"OpenCV cannot open this url source: cannot connect "
                                          rf"to 127.0.0.1:\d+ \(Connection refused\)\)"):
        FrameGrabber(config, log=messages.append)
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"{elapsed:.1f} s to refuse a closed port"
    assert [m.strip().split(" failed")[0] for m in messages[1:]] == ["attempt 1/2", "attempt 2/2"]
    print(f"closed RTSP port refused after 2 reconnect attempts in {elapsed:.2f} s")


def test_rtsp_to_a_silent_server_is_bounded_by_the_network_timeout():
    """A host that accepts the TCP connection and never answers: OpenCV alone waits 30 s."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"rtsp://127.0.0.1:{server.getsockname()[1]}/stream"
        config = SourceConfig(url, reconnect_attempts=1, backoff_s=0.05, network_timeout_s=0.5)
        started = time.perf_counter()
        with pytest.raises(SourceError, match=rf"{url}: .* after 1 reconnect attempts \(last: "
                                              rf"OpenCV cannot open this url source: no stream "
                                              rf"from 127.0.0.1:\d+ within network_timeout_s=0.5"):
            FrameGrabber(config, log=lambda _: None)
        elapsed = time.perf_counter() - started
    assert 0.9 < elapsed < 8.0, f"{elapsed:.1f} s for two 0.5 s opens"
    print(f"silent RTSP server refused after 1 + 1 opens of 0.5 s in {elapsed:.2f} s")


# -- outputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag, name", [("--output", "run.mp4"), ("--metrics", "m.jsonl"),
                                        ("--latency-plot", "latency.png")])
def test_stae_run_never_overwrites_an_output_without_force(small_onnx_path, tmp_path, capsys,
                                                           flag, name):
    from stae_deploy.cli.main import main

    existing = tmp_path / name
    existing.write_bytes(b"precious")
    assert main(["run", str(small_onnx_path[0]), "--input", str(fetch("carphone")),
                 flag, str(existing), "--quiet"]) == 2
    assert capsys.readouterr().err == (f"stae run: error: {existing} already exists; pass "
                                       f"--force to overwrite it\n")
    assert existing.read_bytes() == b"precious"
    with pytest.raises(OutputExistsError):
        refuse_overwrite(existing, force=False)


def frames(count: int) -> list[np.ndarray]:
    return [np.full((48, 64, 3), 20 * k, np.uint8) for k in range(count)]


def frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    try:
        return int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def test_video_gets_its_final_name_only_when_closed(tmp_path):
    final = tmp_path / "out.mp4"
    writer = VideoFileWriter(final, fps=10)
    for frame in frames(5):
        writer.write(frame)
    assert writer.partial_path == tmp_path / "out.mp4.partial.mp4"
    assert writer.partial_path.exists() and not final.exists()
    writer.close()
    assert final.exists() and not writer.partial_path.exists()
    assert frame_count(final) == 5


def test_a_failed_run_keeps_its_frames_under_the_partial_name(tmp_path):
    final = tmp_path / "out.mp4"
    final.write_bytes(b"the previous run's video")          # as with --force
    with pytest.raises(RuntimeError, match="source died"):
        with VideoFileWriter(final, fps=10) as writer:
            for frame in frames(4):
                writer.write(frame)
            raise RuntimeError("source died")
    assert final.read_bytes() == b"the previous run's video"
    assert frame_count(partial_path(final, keep_suffix=True)) == 4   # finished, clearly partial


def test_ctrl_c_stops_a_recording_normally(tmp_path):
    final = tmp_path / "camera.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoFileWriter(final, fps=10) as writer:
            for frame in frames(3):
                writer.write(frame)
            raise KeyboardInterrupt
    assert frame_count(final) == 3 and not partial_path(final, keep_suffix=True).exists()


WRITERS = {
    "video": """
        from stae_deploy.runtime.media import VideoFileWriter
        writer = VideoFileWriter(target, fps=10)
        k = 0
        while True:
            writer.write(np.full((48, 64, 3), k % 256, np.uint8))
            k += 1
    """,
    # How a streamed file (the metrics JSON lines) gets the same guarantee: atomic_path.
    "metrics jsonl": """
        from stae_deploy.runtime.files import atomic_path
        with atomic_path(target) as partial, open(partial, "w") as handle:
            k = 0
            while True:
                handle.write(json.dumps({"step": k}) + "\\n")
                handle.flush()
                k += 1
    """,
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_writer_killed_mid_write_leaves_no_complete_looking_file(tmp_path, writer):
    final = tmp_path / ("out.mp4" if writer == "video" else "metrics.jsonl")
    partial = partial_path(final, keep_suffix=writer == "video")
    script = "import json, sys\nfrom pathlib import Path\nimport numpy as np\n" \
             "target = Path(sys.argv[1])\n" + textwrap.dedent(WRITERS[writer])
    process = subprocess.Popen([sys.executable, "-c", script, str(final)], cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)},
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (partial.exists() and partial.stat().st_size > 10_000):
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not final.exists(), f"{final} looks complete after the writer was killed"
    assert partial.exists()
