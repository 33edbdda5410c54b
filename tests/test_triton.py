"""`stae triton`: the Triton model repository, its config against Triton's own schema, and the
Triton copy of the graph run the way Triton's sequence batcher runs it (sorted-name state
pairing, START/READY controls, several sequences in one batch)."""
from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2

from stae_deploy.export.onnx_graph import save_model, write_metadata
from stae_deploy.export.to_onnx import ExportSettings, export_onnx
from stae_deploy.serving.triton_client import (ClientSettings, decoded_frames, infer_inputs,
                                               main as client_main, sequence_requests,
                                               served_model)
from stae_deploy.serving.triton_repository import TritonOptions, write_repository
from stae_deploy.serving.triton_graph import (CONTROL_INPUTS, CORRID_OUT, END_OUT, state_mispairs,
                                 triton_order)
from stae_deploy.runtime.artifact import ArtifactMetadata, write_engine_sidecar
from stae_deploy.runtime.errors import ConfigError, OutputExistsError, ProtocolError
from stae_deploy.runtime.frames import bgr_to_model_frame
from stae_deploy.runtime.onnx_session import OnnxStepper, open_session
from stae_deploy.runtime.protocol import Dim, IOSpec, StatePair, TensorSpec
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.cli.main import main
from stae_deploy.stae_ref.footage import fetch
from stae_deploy.stae_ref.state_spec import io_spec

from conftest import SMALL_CONFIG, random_provenance, seeded_model

mc: Any = model_config_pb2   # generated protobuf module: its classes are not visible statically


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory):
    """SMALL_CONFIG exported with a dynamic batch axis (seeded random weights)."""
    model = seeded_model(SMALL_CONFIG)
    path = tmp_path_factory.mktemp("triton") / "small_dyn.onnx"
    export_onnx(model, path, random_provenance(model), ExportSettings(dynamic_batch=True))
    return path


def parse_config(path) -> Any:
    """config.pbtxt parsed with Triton's schema (a misspelt field raises)."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def tiny_artifact(path, batch: Dim = "batch", state_names=(("x", "x_next"), ("x_len", "x_len_next"))):
    """A two-state ONNX artifact: prediction = frame + x; x_next = x + frame; x_len_next = x_len
    + 1. Each tensor is a (batch, 3, 1, 2) float32 "frame"."""
    shape = (batch, 3, 1, 2)
    spec = IOSpec(data_inputs=(TensorSpec("frame", shape),),
                  data_outputs=(TensorSpec("prediction", shape),),
                  state=tuple(StatePair(TensorSpec(i, shape), TensorSpec(o, shape))
                              for i, o in state_names))
    (x, x_next), (count, count_next) = state_names
    nodes = [helper.make_node("Add", ["frame", x], ["prediction"]),
             helper.make_node("Add", [x, "frame"], [x_next]),
             helper.make_node("Add", [count, "one"], [count_next])]
    values = [helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(shape))
              for t in (*spec.inputs, *spec.outputs)]
    graph = helper.make_graph(nodes, "tiny", values[:3], values[3:],
                              [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    write_metadata(model, ArtifactMetadata(spec=spec, config={}))
    save_model(model, path)
    return path


def run_like_triton(path, schedule, slots, seed=0):
    """Step the Triton copy at ``path`` as Triton's direct sequence batcher does.

    One batch slot per sequence; after each step every state input takes the output at the same
    position in *sorted name order* (Triton's pairing, not the protocol's); START on a
    sequence's first request; READY = 0 and garbage frame/state in a slot without a request.
    Slots start with garbage state (no initial_state), so only START can make them zero.
    ``schedule[t]`` maps slot -> (corrid, frame, start, end). Returns [(feed, outputs)].
    """
    rng = np.random.default_rng(seed)
    session, metadata = open_session(path)
    spec = metadata.spec
    pairs = list(zip(triton_order([p.input.name for p in spec.state]),
                     triton_order([p.output.name for p in spec.state])))
    frame = spec.frame
    state = {p.input.name: rng.normal(size=(slots, *p.input.per_sample_shape)).astype(np.float32)
             for p in spec.state}
    names = [t.name for t in spec.outputs]
    history = []
    for requests in schedule:
        feed = {frame.name: rng.random((slots, *frame.per_sample_shape), dtype=np.float32),
                **{c: np.zeros((slots, 1), np.float32) for c in ("START", "READY", "END")},
                "CORRID": np.zeros((slots, 1), np.int64), **state}
        for slot, (corrid, frame_data, start, end) in requests.items():
            feed[frame.name][slot] = frame_data
            feed["START"][slot], feed["READY"][slot], feed["END"][slot] = start, 1.0, end
            feed["CORRID"][slot] = corrid
        outputs = dict(zip(names, session.run(names, feed)))
        history.append((feed, outputs))
        state = {i: outputs[o] for i, o in pairs}
    return history, spec


def test_repository_config_matches_the_protocol(dynamic_onnx, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert main(["triton", str(dynamic_onnx), "-o", str(repo)]) == 0
    report = json.loads(capsys.readouterr().out)
    model_dir = repo / "stae"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "1", "README.md", "config.pbtxt"]
    assert not list(tmp_path.glob(".*partial*"))             # the staging dir was renamed
    config = parse_config(model_dir / "config.pbtxt")
    assert config.name == "stae" and config.backend == "onnxruntime"
    assert config.max_batch_size == 8
    source = io_spec(SMALL_CONFIG, "batch")
    assert [(t.name, list(t.dims), t.data_type) for t in config.input] == [
        ("frame", [3, 64, 64], mc.TYPE_FP32)]
    assert [t.name for t in config.output] == ["prediction", CORRID_OUT, END_OUT]
    batching = config.sequence_batching
    assert batching.WhichOneof("strategy_choice") == "direct"
    assert batching.max_sequence_idle_microseconds == 5_000_000
    kinds = {c.name: (c.control[0].kind, list(c.control[0].fp32_false_true), c.control[0].data_type)
             for c in batching.control_input}
    control = mc.ModelSequenceBatching.Control
    assert kinds == {"START": (control.CONTROL_SEQUENCE_START, [0.0, 1.0], mc.TYPE_INVALID),
                     "READY": (control.CONTROL_SEQUENCE_READY, [0.0, 1.0], mc.TYPE_INVALID),
                     "END": (control.CONTROL_SEQUENCE_END, [0.0, 1.0], mc.TYPE_INVALID),
                     "CORRID": (control.CONTROL_SEQUENCE_CORRID, [], mc.TYPE_INT64)}
    assert len(batching.state) == len(source.state)
    for entry, pair in zip(batching.state, source.state):
        dims = list(pair.input.per_sample_shape)
        assert (entry.input_name, entry.output_name) == (pair.input.name, pair.output.name)
        assert (list(entry.dims), entry.data_type) == (dims, mc.TYPE_FP32)
        assert not entry.use_growable_memory and not entry.use_same_buffer_for_input_output
        (initial,) = entry.initial_state
        assert initial.WhichOneof("state_data") == "zero_data"
        assert (list(initial.dims), initial.data_type) == (dims, mc.TYPE_FP32)
    assert "use_growable_memory" not in (model_dir / "config.pbtxt").read_text()
    (group,) = config.instance_group
    assert (group.count, group.kind) == (1, mc.ModelInstanceGroup.KIND_GPU)

    # The copy is a valid artifact: its stored protocol is its real I/O, controls included.
    _, metadata = open_session(model_dir / "1" / "model.onnx")
    assert metadata.notes["triton_controls"] is True
    assert [t.name for t in metadata.spec.data_inputs] == ["frame", *CONTROL_INPUTS]
    assert metadata.spec.state == source.state

    per_stream = sum(int(np.prod(p.input.per_sample_shape)) * 4 for p in source.state)
    pool = 8 * per_stream * 2
    assert report["cuda_memory_pool_bytes"] == pool and report["streams"] == 8
    readme = (model_dir / "README.md").read_text()
    assert f"{pool:,} bytes" in readme and "--cuda-memory-pool-byte-size=0:" in readme
    assert f"--model-repository={repo.resolve()}" in readme
    assert (f"python -m stae_deploy.serving.triton_client --url localhost:8001 --model stae "
            f"\\\n    --repository {repo.resolve()} --input clip.mp4") in readme


def test_options_reach_the_config_and_are_validated(dynamic_onnx, tmp_path):
    options = TritonOptions(model_name="cams", max_batch=4, strategy="oldest",
                            max_candidate_sequences=16, instances=2, kind="cpu")
    repo = write_repository(dynamic_onnx, tmp_path, options)
    config = parse_config(repo.config)
    assert (config.name, config.max_batch_size) == ("cams", 4)
    assert config.sequence_batching.oldest.max_candidate_sequences == 16
    assert (config.instance_group[0].count, config.instance_group[0].kind) == (
        2, mc.ModelInstanceGroup.KIND_CPU)
    assert repo.pool_bytes == 16 * 2 * repo.state_bytes_per_stream * 2   # 16 slots x 2 instances
    again = write_repository(repo.model_file, tmp_path / "again", TritonOptions())  # a copy as is
    assert parse_config(again.config).sequence_batching.state == config.sequence_batching.state
    for field, bad in (("max_batch", 0), ("model_name", "../x"), ("strategy", "newest"),
                       ("kind", "tpu"), ("instances", 0)):
        kwargs: dict[str, Any] = {field: bad}
        with pytest.raises(ConfigError, match=field):
            TritonOptions(**kwargs)


def test_sorted_name_pairing_check():
    def spec(pairs):
        frame = ("batch", 3, 1, 2)
        return IOSpec(data_inputs=(TensorSpec("frame", frame),),
                      data_outputs=(TensorSpec("prediction", frame),),
                      state=tuple(StatePair(TensorSpec(i, ("batch", 2)),
                                            TensorSpec(o, ("batch", 2))) for i, o in pairs))

    # "x_len_next" < "x_next" ('l' < 'n') but "x" < "x_len": Triton feeds x from x_len_next.
    assert state_mispairs(spec([("x", "x_next"), ("x_len", "x_len_next")])) == [
        ("x", "x_len_next", "x_next"), ("x_len", "x_next", "x_len_next")]
    assert state_mispairs(spec([("a", "z"), ("b", "y")])) == [("a", "y", "z"), ("b", "z", "y")]
    assert state_mispairs(io_spec(SMALL_CONFIG, "batch")) == []
    assert state_mispairs(spec([("state_in.x", "state_out.x"),
                                ("state_in.x_len", "state_out.x_len")])) == []


def test_mispairing_names_are_refused_or_renamed(tmp_path):
    source = tiny_artifact(tmp_path / "tiny.onnx")
    with pytest.raises(ProtocolError, match=r"(?s)state input 'x' would get output 'x_len_next'"
                                            r" \(its pair is 'x_next'\).*--rename-states"):
        write_repository(source, tmp_path / "repo", TritonOptions())
    assert not (tmp_path / "repo").exists()

    repo = write_repository(source, tmp_path / "repo", TritonOptions(rename_states=True))
    states = parse_config(repo.config).sequence_batching.state
    assert [(s.input_name, s.output_name) for s in states] == [
        ("state_in.x", "state_out.x"), ("state_in.x_len", "state_out.x_len")]
    frames = np.arange(24, dtype=np.float32).reshape(4, 3, 1, 2)
    schedule = [{0: (5, frames[t], float(t == 0), float(t == 3))} for t in range(4)]
    history, _ = run_like_triton(repo.model_file, schedule, slots=1)
    for t, (_, outputs) in enumerate(history):   # x = sum of earlier frames, x_len = steps seen
        np.testing.assert_array_equal(outputs["prediction"][0], frames[:t + 1].sum(axis=0))
        np.testing.assert_array_equal(outputs["state_out.x_len"][0], np.full((3, 1, 2), t + 1))


def test_triton_copy_runs_sequences_in_a_batch_like_the_model_alone(dynamic_onnx, tmp_path):
    repo = write_repository(dynamic_onnx, tmp_path, TritonOptions(max_batch=3))
    rng = np.random.default_rng(1)
    frames = {c: rng.random((5, 3, 64, 64), dtype=np.float32) for c in (11, 22, 33)}
    # slot 0: A (11) at steps 0-4; slot 1: B (22) at steps 0, 1, 3, 4 (no request at step 2);
    # slot 2: idle until C (33) starts at step 2 on garbage state.
    timeline = {11: (0, [0, 1, 2, 3, 4]), 22: (1, [0, 1, 3, 4]), 33: (2, [2, 3, 4])}
    schedule = [{} for _ in range(5)]
    for corrid, (slot, steps) in timeline.items():
        for k, t in enumerate(steps):
            schedule[t][slot] = (corrid, frames[corrid][k], float(k == 0),
                                 float(k == len(steps) - 1))
    history, spec = run_like_triton(repo.model_file, schedule, slots=3)

    alone = OnnxStepper(dynamic_onnx)
    for corrid, (slot, steps) in timeline.items():
        state = alone.zero_state(batch=1)
        for k, t in enumerate(steps):
            expected, state, _ = alone.step(frames[corrid][k][None], state)
            feed, outputs = history[t]
            error = np.abs(outputs["prediction"][slot] - expected[0]).max()
            assert error <= 1e-6, f"sequence {corrid}, request {k}: {error}"
            assert outputs[CORRID_OUT][slot, 0] == corrid
            assert outputs[END_OUT][slot, 0] == float(k == len(steps) - 1)
    for t, slot in ((2, 1), (0, 2), (1, 2)):                 # READY = 0: state not advanced
        feed, outputs = history[t]
        assert feed["READY"][slot, 0] == 0
        for pair in spec.state:
            np.testing.assert_array_equal(outputs[pair.output.name][slot],
                                          feed[pair.input.name][slot])


def test_refusals(dynamic_onnx, tmp_path):
    static = tiny_artifact(tmp_path / "static.onnx", batch=1,
                           state_names=(("a", "next_a"), ("b", "next_b")))
    with pytest.raises(ConfigError, match="static batch of 1.*stae export --dynamic-batch"):
        write_repository(static, tmp_path / "repo", TritonOptions())

    # An engine whose sidecar has no controls is refused from the sidecar alone (no TensorRT).
    engine = tmp_path / "plain.engine"
    engine.write_bytes(np.random.default_rng(0).bytes(4096))
    _, metadata = open_session(dynamic_onnx)
    write_engine_sidecar(engine, metadata, {"build_config": {"max_batch": 8}})
    with pytest.raises(ConfigError, match=r"no Triton sequence controls.*stae triton X\.onnx.*"
                                          r"stae build"):
        write_repository(engine, tmp_path / "repo", TritonOptions())
    assert not (tmp_path / "repo").exists()

    existing = tmp_path / "repo" / "stae"
    existing.mkdir(parents=True)
    (existing / "mine.txt").write_text("user's file")
    with pytest.raises(OutputExistsError, match="stae already exists; pass --force"):
        write_repository(dynamic_onnx, tmp_path / "repo", TritonOptions())
    assert (existing / "mine.txt").read_text() == "user's file"
    write_repository(dynamic_onnx, tmp_path / "repo", TritonOptions(), force=True)
    assert not (existing / "mine.txt").exists() and (existing / "config.pbtxt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.engine", "plain.engine.json",
                                                          "repo", "static.onnx"]


def test_engine_built_from_the_triton_copy_is_accepted(dynamic_onnx, tmp_path):
    onnx_repo = write_repository(dynamic_onnx, tmp_path / "onnx_repo", TritonOptions())
    _, metadata = open_session(onnx_repo.model_file)
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"not really a plan")   # never deserialised: the sidecar says it all
    write_engine_sidecar(engine, metadata, {"build_config": {"max_batch": 8}})
    repo = write_repository(engine, tmp_path / "repo", TritonOptions())
    config = parse_config(repo.config)
    assert config.platform == "tensorrt_plan" and repo.model_file.name == "model.plan"
    assert repo.model_file.read_bytes() == b"not really a plan"
    assert [s.input_name for s in config.sequence_batching.state] == [
        p.input.name for p in metadata.spec.state]
    with pytest.raises(ConfigError, match="max_batch: 16 exceeds the engine's"):
        write_repository(engine, tmp_path / "repo2", TritonOptions(max_batch=16))


def test_client_streams_real_frames_as_one_sequence_shaped_like_the_config(dynamic_onnx,
                                                                            tmp_path):
    repo = write_repository(dynamic_onnx, tmp_path, TritonOptions(model_name="cams"))
    (frame_input,) = parse_config(repo.config).input
    model = served_model(tmp_path, "cams")
    assert (model.name, model.spec.frame.name, model.spec.prediction.name) == (
        "cams", "frame", "prediction")

    video = fetch("carphone")
    capture = cv2.VideoCapture(str(video))
    raw = [capture.read()[1] for _ in range(5)]                  # (144, 176, 3) BGR uint8
    capture.release()
    with FrameGrabber(SourceConfig(str(video)), log=lambda _: None) as grabber:
        decoded = list(decoded_frames(grabber, max_frames=5))
    assert len(decoded) == 5
    for ours, theirs in zip(decoded, raw):
        np.testing.assert_array_equal(ours, theirs)

    requests = list(sequence_requests(decoded, (64, 64), sequence_id=2 ** 63 - 1))
    assert [(r.sequence_id, r.start, r.end) for r in requests] == [
        (2 ** 63 - 1, k == 0, k == 4) for k in range(5)]
    triton_dtype = mc.DataType.Name(frame_input.data_type).removeprefix("TYPE_")   # "FP32"
    for image, request in zip(raw, requests):
        (tensor,) = infer_inputs(model, request)
        assert (tensor.name(), tensor.shape(), tensor.datatype()) == (
            frame_input.name, [1, *frame_input.dims], triton_dtype)
        sent = np.frombuffer(tensor._get_content(), np.float32).reshape(tensor.shape())
        np.testing.assert_array_equal(sent[0], bgr_to_model_frame(image, (64, 64)))
    (only,) = sequence_requests(raw[:1], (64, 64), sequence_id=9)
    assert (only.start, only.end) == (True, True)              # a one-frame sequence


def test_client_user_errors_are_one_line(dynamic_onnx, tmp_path, capsys):
    write_repository(dynamic_onnx, tmp_path / "repo", TritonOptions())
    video = str(fetch("carphone"))
    common = ["--model", "stae", "--repository", str(tmp_path / "repo"), "--input", video]
    assert client_main(["--url", "localhost:1", *common, "--sequence-id", "3"]) == 2
    assert "error: Triton at localhost:1, model 'stae': unreachable (failed to connect" in \
        capsys.readouterr().err
    assert client_main([*common, "--sequence-id", "0"]) == 2
    assert "error: sequence_id: expected 1 .. 2**63-1" in capsys.readouterr().err
    assert client_main([*common[:2], "--repository", str(tmp_path), *common[4:]]) == 2
    assert f"{tmp_path / 'stae' / '1'}: no model.onnx or model.plan" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_frames: expected >= 1"):
        ClientSettings("localhost:8001", "stae", video, sequence_id=1, repository=tmp_path,
                       max_frames=0)
