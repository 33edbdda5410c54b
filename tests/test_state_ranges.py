"""Unbounded recurrent state, end to end: the cells declare it, the protocol stores it, INT8 keeps
the convolutions it feeds in float, calibration's state ranges travel in the INT8 artifact, and
`stae run`'s range guard counts, warns and (if asked) resets when a stream's state leaves them."""
from __future__ import annotations

import json
from dataclasses import replace

import onnx
import pytest

from stae_deploy.calibration.calib_data import calibration_state_ranges, save_calibration
from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.calibration.policy import QuantPolicy
from stae_deploy.calibration.quantize import quantize_model
from stae_deploy.calibration.record import calibration_streams, record_calibration
from stae_deploy.calibration.unbounded_state import unbounded_state_convs
from stae_deploy.export.onnx_graph import load_model, read_metadata, save_model, write_metadata
from stae_deploy.export.to_onnx import export_onnx
from stae_deploy.runtime.errors import ArtifactError, ConfigError, ProtocolError
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.runtime.range_guard import RangeGuard, RangeGuardSettings
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.state_ranges import StateRanges
from stae_deploy.runtime.streaming import RunOptions, run_streams
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import fetch
from stae_deploy.stae_ref.state_spec import io_spec

from conftest import SMALL_CONFIG, random_provenance, seeded_model

# cell -> (states it declares unbounded, the conv modules those states feed in each layer)
UNBOUNDED = {
    "stam_bounded": ((), ()),
    "convlstm": (("cell_state",), ()),                   # its memory is only used elementwise
    "st_lstm": (("temporal_memory", "spatial_memory"), ("conv_m", "conv_cm", "fuse")),
    "causal_lstm": (("temporal_memory",), ("conv_c", "conv_c2m", "fuse")),
}


def config_for(cell: str) -> STAEConfig:
    return STAEConfig.from_dict({**SMALL_CONFIG.to_dict(), "cell": cell, "layers": 2})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """cell -> path of its small seeded export (fast graph)."""
    folder = tmp_path_factory.mktemp("cells")
    paths = {}
    for cell in UNBOUNDED:
        model = seeded_model(config_for(cell))
        paths[cell] = folder / f"{cell}.onnx"
        export_onnx(model, paths[cell], random_provenance(model))
    return paths


def conv_module(model: onnx.ModelProto, node_name: str) -> str:
    """'conv_c' of the node whose weight is cell.layers.<k>.conv_c.conv.weight."""
    node = next(n for n in model.graph.node if n.name == node_name)
    return node.input[1].split("cell.layers.")[1].split(".")[1]


@pytest.mark.parametrize("cell", UNBOUNDED)
def test_the_protocol_marks_the_unbounded_states_and_int8_finds_the_convs_they_feed(
        cell, exported):
    states, convs = UNBOUNDED[cell]
    model = load_model(exported[cell])
    spec = read_metadata(model, str(exported[cell])).spec
    assert [p.input.name for p in spec.state if p.unbounded] == list(states)
    assert IOSpec.from_json(spec.to_json()) == spec
    found = unbounded_state_convs(model, spec)
    assert sorted({conv_module(model, name) for name in found}) == sorted(convs)
    assert len(found) == 2 * len(convs), "each of the 2 layers' convs"
    groups = group_nodes(model)
    kept_by_groups = QuantPolicy().excluded_nodes(groups)
    assert QuantPolicy().excluded_nodes(groups, found) == kept_by_groups + found
    assert QuantPolicy(quantize_unbounded_state_convs=True).excluded_nodes(groups, found) == \
        kept_by_groups


def test_protocols_written_before_the_flag_read_as_bounded():
    data = json.loads(io_spec(config_for("causal_lstm")).to_json())
    for pair in data["state"]:
        del pair["unbounded"]
    assert not any(p.unbounded for p in IOSpec.from_dict(data).state)
    data["state"][1]["unbounded"] = "yes"
    with pytest.raises(ProtocolError, match="'hidden': 'unbounded' must be true or false"):
        IOSpec.from_dict(data)


@pytest.fixture(scope="module")
def causal_int8(exported, tmp_path_factory):
    """PredRNN++'s small export calibrated on 24 steps of carphone and quantised (onnxruntime
    target): (fp32 path, int8 path, calibration info)."""
    source = exported["causal_lstm"]
    streams = calibration_streams((64, 64), ("carphone",), (), steps=24)
    tensors, info = record_calibration(source, streams, warmup=0, every=3, progress=False)
    folder = tmp_path_factory.mktemp("int8")
    save_calibration(folder / "calib.npz", tensors, info)
    output = folder / "causal.int8.onnx"
    quantize_model(source, folder / "calib.npz", output, target="onnxruntime")
    return source, output, info


def test_int8_keeps_the_convs_an_unbounded_state_feeds_in_float(causal_int8):
    source, output, _ = causal_int8
    fp32 = load_model(source)
    kept = set(unbounded_state_convs(fp32, read_metadata(fp32, str(source)).spec))
    graph = load_model(output).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.input[1].split("_DequantizeLinear")[0].split("_quantized")[0]: n
             for n in graph.node if n.op_type == "Conv"}
    kept_weights = {n.input[1] for n in fp32.graph.node if n.name in kept}
    assert kept_weights and all(w in convs and convs[w].input[0] not in dequantized
                                for w in kept_weights), "fed by C: FP32"
    others = [n for w, n in convs.items() if ".conv_x." in w or ".conv_h." in w]
    assert others and all(n.input[0] in dequantized for n in others), "the rest stay INT8"


def test_the_int8_artifact_carries_the_state_ranges_calibration_saw(causal_int8):
    _, output, info = causal_int8
    metadata = read_metadata(load_model(output), str(output))
    assert metadata.state_ranges == calibration_state_ranges(info, metadata.spec)
    low, high = metadata.state_ranges.ranges["temporal_memory"]
    assert (low, high) == (info.ranges["temporal_memory"].min, info.ranges["temporal_memory"].max)
    assert set(metadata.state_ranges.ranges) == {p.input.name for p in metadata.spec.state}
    assert metadata.state_ranges.source == "calibration: 8 samples of carphone"


def test_state_ranges_are_validated_naming_the_tensor():
    spec = io_spec(config_for("causal_lstm"))
    with pytest.raises(ProtocolError, match="'hidden' must be \\[min, max\\] with finite"):
        StateRanges("calibration", {"hidden": (1.0, -1.0)})
    with pytest.raises(ProtocolError, match="'hidden' must be"):
        StateRanges("calibration", {"hidden": (float("nan"), 1.0)})
    with pytest.raises(ProtocolError, match="ranges for \\['cell_state'\\], which are not"):
        StateRanges("calibration", {"cell_state": (0.0, 1.0)}).check_names(spec)
    ranges = StateRanges("export rollout", {"hidden": (-1, 1)})
    assert StateRanges.from_json(ranges.to_json()) == ranges
    with pytest.raises(ConfigError, match="range guard mode"):
        RangeGuardSettings(mode="loud")
    with pytest.raises(ConfigError, match="margin: expected >= 0"):
        RangeGuardSettings(margin=-0.1)


def test_the_guard_allows_the_margin_and_no_more():
    guard = RangeGuard(StateRanges("calibration", {"memory": (-2.0, 2.0), "hidden": (0.0, 1.0)}),
                       RangeGuardSettings(margin=0.5))
    assert guard.limits == {"memory": (-4.0, 4.0), "hidden": (-0.5, 1.5)}
    assert guard.excursions({"memory": (-4.0, 4.0), "hidden": (0.0, 1.5)}) == []
    [outside] = guard.excursions({"memory": (-1.0, 4.01), "hidden": (0.0, 1.0)})
    assert outside.tensor == "memory" and outside.seen_max == 4.01
    assert [e.tensor for e in guard.excursions({"hidden": (float("nan"), 0.5)})] == ["hidden"]


def with_ranges(source, target, ranges: dict) -> None:
    """A copy of the artifact ``source`` whose metadata carries ``ranges``."""
    model = load_model(source)
    metadata = read_metadata(model, str(source))
    write_metadata(model, replace(metadata, state_ranges=StateRanges("test", ranges)))
    save_model(model, target)


def run_clip(model_path, mode: str, frames: int = 30) -> tuple[dict, list[str]]:
    """(summary, log lines) of a run over carphone with the range guard in ``mode``."""
    messages: list[str] = []
    with FrameGrabber(SourceConfig(str(fetch("carphone")))) as grabber:
        [summary], _ = run_streams(Predictor.load(model_path), [grabber], RunOptions(
            max_frames=frames, range_guard=RangeGuardSettings(mode)), log=messages.append)
    return summary.to_dict(), messages


def test_the_guard_counts_warns_once_and_resets_when_asked(causal_int8, tmp_path):
    source, output, info = causal_int8
    summary, messages = run_clip(output, "warn")                 # calibrated ranges: silent
    assert summary["out_of_range_steps"] == 0 and not any("range" in m for m in messages)
    narrow = tmp_path / "narrow.onnx"                            # a range it will leave
    high = info.ranges["temporal_memory"].max
    with_ranges(source, narrow, {"temporal_memory": (0.0, high / 100)})
    summary, messages = run_clip(narrow, "warn")
    warnings = [m for m in messages if "state 'temporal_memory'" in m]
    assert summary["out_of_range_steps"] >= 20 and len(warnings) == 1
    assert "outside [" in warnings[0] and "from test" in warnings[0]
    assert summary["resets"] == 0
    summary, _ = run_clip(narrow, "reset")
    assert summary["resets"] == summary["out_of_range_steps"] >= 10
    assert run_clip(narrow, "off")[0]["out_of_range_steps"] == 0


def test_the_guard_never_copies_device_state_to_read_it(causal_int8, tmp_path):
    """A backend that keeps the state on the device answers None: the guard says once that it
    does not check, instead of copying the state to the host every step."""
    source, _, info = causal_int8
    narrow = tmp_path / "narrow.onnx"
    high = info.ranges["temporal_memory"].max
    with_ranges(source, narrow, {"temporal_memory": (0.0, high / 100)})

    class DeviceStatePredictor(Predictor):
        def state_extremes(self, stream):
            return None

    messages: list[str] = []
    with FrameGrabber(SourceConfig(str(fetch("carphone")))) as grabber:
        base = Predictor.load(narrow)
        [summary], _ = run_streams(DeviceStatePredictor(base.backend), [grabber],
                                   RunOptions(max_frames=10), log=messages.append)
    assert summary.out_of_range_steps == 0
    assert [m for m in messages if "range guard" in m] == [
        "range guard: not checked: this model keeps its state on the device or a server, and "
        "reading it would copy it every step"]


def test_a_metadata_range_of_no_state_is_refused_naming_the_file(exported, tmp_path):
    model = load_model(exported["convlstm"])
    model.metadata_props.add(key="stae.state_ranges",
                             value=StateRanges("test", {"ring": (0.0, 1.0)}).to_json())
    onnx.save(model, tmp_path / "bad.onnx")
    with pytest.raises(ArtifactError, match="bad.onnx: metadata 'stae.state_ranges' is invalid"):
        read_metadata(load_model(tmp_path / "bad.onnx"), str(tmp_path / "bad.onnx"))


def test_export_stores_the_ranges_of_its_rollout(tmp_path):
    from stae_deploy.calibration.record import calibration_streams
    from stae_deploy.cli.main import main
    from stae_deploy.runtime.onnx_artifact import OnnxArtifact

    config = tmp_path / "causal.json"
    config.write_text(json.dumps(config_for("causal_lstm").to_dict()))
    output = tmp_path / "causal.onnx"
    assert main(["export", "--config", str(config), "-o", str(output), "--range-steps", "30",
                 "--clip", "carphone", "--no-check", "--quiet"]) == 0
    ranges = OnnxArtifact.open(output).metadata.state_ranges
    assert ranges is not None and ranges.source == "export rollout: 30 steps of carphone"
    predictor = Predictor.load(output)                  # the same 30 steps, independently
    stream = predictor.new_stream()
    seen = {name: [0.0, 0.0] for name in ranges.ranges}
    for frame in calibration_streams((64, 64), ("carphone",), (), 30)["carphone"]:
        predictor.step(stream, frame)
        for name, value in stream.state().items():
            seen[name] = [min(seen[name][0], value.min()), max(seen[name][1], value.max())]
    for name, (low, high) in ranges.ranges.items():
        assert (low, high) == pytest.approx(seen[name], abs=1e-6), name
    assert ranges.ranges["temporal_memory"][1] > 1.0       # an LSTM memory, past tanh's range
    assert main(["export", "--config", str(config), "-o", str(output), "--force",
                 "--range-steps", "-1"]) == 2
