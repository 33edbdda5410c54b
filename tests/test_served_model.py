"""What a client of a served model relies on, without a server: the model's metadata travels in
its Triton config and comes back intact, cameras route to servers stably and move little when a
server is added, and `stae run --server` refuses what only a local model takes."""
from __future__ import annotations

from collections import Counter

import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from stae_deploy.benchmarks.triton_load import LoadSettings, Window, summarize
from stae_deploy.cli.main import main
from stae_deploy.runtime.artifact import ArtifactMetadata
from stae_deploy.runtime.errors import ArtifactError, ConfigError
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.serving.camera_routing import server_for
from stae_deploy.serving.triton_predictor import ServerAddress
from stae_deploy.serving.triton_python_repository import write_python_repository
from stae_deploy.serving.triton_repository import (TritonOptions, metadata_from_model_config,
                                                   metadata_parameters_pbtxt, write_repository)



def served_config(config_pbtxt: str) -> dict:
    """The config as the server hands it to a client (``get_model_config(as_json=True)``)."""
    parsed = text_format.Parse(config_pbtxt, mc.ModelConfig())
    return json_format.MessageToDict(parsed, preserving_proto_field_name=True)


@pytest.mark.parametrize("backend", ["python", "onnxruntime"])
def test_both_repositories_carry_the_artifact_metadata_in_their_config(
        small_dynamic_onnx_path, tmp_path, backend):
    if backend == "python":
        written = write_python_repository(small_dynamic_onnx_path, tmp_path, TritonOptions())
        expected = OnnxArtifact.open(small_dynamic_onnx_path).metadata
    else:
        written = write_repository(small_dynamic_onnx_path, tmp_path, TritonOptions())
        expected = OnnxArtifact.open(written.model_file).metadata   # the Triton copy
    got = metadata_from_model_config(served_config(written.config.read_text()), "test")
    assert got.to_props() == expected.to_props()


def test_metadata_survives_quotes_backslashes_newlines_and_non_ascii(small_dynamic_onnx_path):
    original = OnnxArtifact.open(small_dynamic_onnx_path).metadata
    odd = ArtifactMetadata(original.spec, original.config, notes={
        "where": 'C:\\clips\\"night"\nsecond line, caf\u00e9'})
    back = metadata_from_model_config(served_config(metadata_parameters_pbtxt(odd)), "test")
    assert back.notes == odd.notes and back.to_props() == odd.to_props()


def test_a_config_without_metadata_is_refused_by_name():
    with pytest.raises(ArtifactError, match="Triton at x:1, model 'm': its config carries no "
                                            "STAE metadata"):
        metadata_from_model_config({"name": "m", "parameters": {}}, "Triton at x:1, model 'm'")


def test_server_addresses_parse_or_are_refused_naming_the_text():
    assert ServerAddress.parse("grpc://127.0.0.1:8001") == ServerAddress("127.0.0.1:8001", "stae")
    assert ServerAddress.parse("grpc://edge-3:9001/cams") == ServerAddress("edge-3:9001", "cams")
    for wrong in ("127.0.0.1:8001", "http://127.0.0.1:8000", "grpc://127.0.0.1", "grpc://:80"):
        with pytest.raises(ConfigError, match=f"--server '{wrong}': expected grpc://HOST:PORT"):
            ServerAddress.parse(wrong)


def test_cameras_route_stably_evenly_and_move_little_when_a_server_is_added():
    cameras = [f"rtsp://10.0.0.{i}/stream" for i in range(400)]
    two = ["127.0.0.1:8001", "127.0.0.1:9001"]
    routed = {camera: server_for(camera, two) for camera in cameras}
    assert routed == {camera: server_for(camera, list(reversed(two))) for camera in cameras}
    assert min(Counter(routed.values()).values()) >= 160          # 200 +- 40 of 400
    three = [*two, "127.0.0.1:10001"]
    moved = [camera for camera in cameras if server_for(camera, three) != routed[camera]]
    assert all(server_for(camera, three) == three[2] for camera in moved)   # only to the new one
    assert 90 <= len(moved) <= 180                                # about a third
    # The same choice in any process: sha256, not Python's per-process hash().
    assert server_for("rtsp://10.0.0.7/stream", two) == "127.0.0.1:9001"
    with pytest.raises(ConfigError, match="each server once"):
        server_for("cam", ["a:1", "a:1"])


def test_stae_run_refuses_local_only_options_with_a_server(capsys, tmp_path):
    video = str(tmp_path / "missing.mp4")
    assert main(["run", "--server", "grpc://127.0.0.1:1", "--input", video,
                 "--threads", "2"]) == 2
    assert "--threads: set by the server's model repository" in capsys.readouterr().err
    assert main(["run", "--server", "grpc://127.0.0.1:1", "--input", video,
                 "--horizon", "3"]) == 2
    assert "--horizon 3: a served model predicts the next frame only" in capsys.readouterr().err
    assert main(["run", "--input", video]) == 2
    assert "give the MODEL (an ONNX file or engine), or --server" in capsys.readouterr().err
    assert main(["run", "--server", "grpc://127.0.0.1:1", "--input", video]) == 2
    assert "Triton at 127.0.0.1:1" in capsys.readouterr().err


def test_load_report_pairs_each_repeat_and_refuses_bad_settings():
    triton = [Window(400, 10.0, [20.0] * 99 + [90.0]), Window(900, 10.0, [10.0] * 100)]
    local = [Window(500, 10.0, [16.0] * 100), Window(1000, 10.0, [8.0] * 100)]
    row = summarize(4, triton, local, mean_batch=2.5)
    assert (row["triton_fps"], row["in_process_fps"]) == (65.0, 75.0)       # medians
    assert row["overhead_ratio"] == round(65 / 75, 3)
    assert row["overhead_ratio_paired"] == round((0.8 + 0.9) / 2, 3)         # per repeat
    assert row["triton_p99_ms"] == round((20 + 0.01 * 70 + 10) / 2, 2)
    for field, value in (("concurrency", (0,)), ("seconds", 0.0), ("repeats", 0),
                         ("sequence_length", 1), ("threads", 0)):
        with pytest.raises(ConfigError, match=field):
            LoadSettings(model="m.onnx", **{field: value})
