"""The fast export graph is the reference, rearranged: every Conv3d as a time-stacked Conv2d,
eq. (8) before the last depth-to-space, exact ONNX rewrites. Same numbers, same I/O, same names."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.export.graph_rewrites import decompose_softmax, merge_sibling_convs
from stae_deploy.export.time_stacked import time_stacked_conv, time_stacked_norm
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.config import STAEConfig
from conftest import (SMALL_CONFIG, assert_fast_graph_is_the_reference_step, random_provenance, seeded_model)

TINY = dict(frame_size=(32, 32), patch=4, stride2_stages=1, hidden=8, layers=2, tau=3)

# name -> config: every option that changes the graph's structure.
CONFIGS = {
    "small (3 layers, kernel 3x3x3)": SMALL_CONFIG,
    "clip_len 3": STAEConfig(**TINY, kernel=(3, 3, 3), clip_len=3),
    "kernel depth 5 > T": STAEConfig(**TINY, kernel=(5, 3, 3)),
    "kernel depth 1": STAEConfig(**TINY, kernel=(1, 3, 3)),
    "bounded cell, residual head, decoder skip": STAEConfig(
        **TINY, kernel=(3, 3, 3), cell="stam_bounded", head="residual", decoder_skip=True),
    "two stride-2 stages, patch 2": STAEConfig(
        frame_size=(32, 32), patch=2, stride2_stages=2, hidden=8, layers=1, tau=2,
        kernel=(3, 3, 3)),
}


@pytest.mark.parametrize(("time", "kernel", "padding", "stride"), [
    (2, (3, 3, 3), (1, 1, 1), (1, 1, 1)),     # STAM's convs: block weight [[w1, w2], [w0, w1]]
    (2, (3, 3, 3), (1, 1, 1), (1, 2, 2)),     # the encoders' stride-2 stages
    (3, (3, 5, 5), (1, 2, 2), (1, 1, 1)),
    (2, (5, 3, 3), (2, 1, 1), (1, 1, 1)),     # kernel deeper than the clip
    (2, (1, 3, 3), (0, 1, 1), (1, 1, 1)),     # the decoders' last conv
    (2, (2, 1, 1), (0, 0, 0), (1, 1, 1)),     # the time collapse: T -> 1
])
def test_time_stacked_conv_equals_conv3d(time, kernel, padding, stride):
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, kernel, stride=stride, padding=padding).double()
    x = torch.randn(2, 4, time, 12, 12, dtype=torch.float64)
    expected = conv(x)                                           # (B, C_out, T_out, h, w)
    got = time_stacked_conv(conv, time).double()(x.flatten(1, 2))
    assert torch.allclose(got, expected.flatten(1, 2), rtol=0, atol=1e-12)


def test_time_stacked_norm_equals_groupnorm_over_time():
    torch.manual_seed(0)
    norm = nn.GroupNorm(1, 5).double()
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 5, 3, 7, 7, dtype=torch.float64)
    got = time_stacked_norm(norm, 3).double()(x.flatten(1, 2))
    assert torch.allclose(got, norm(x).flatten(1, 2), rtol=0, atol=1e-12)


def test_convs_that_mix_time_steps_are_refused():
    with pytest.raises(ConfigError, match="time stride 1"):
        time_stacked_conv(nn.Conv3d(2, 2, 3, stride=(2, 1, 1), padding=1), 4)


@pytest.mark.parametrize("name", CONFIGS)
def test_fast_formulation_computes_the_reference_step(name):
    """float64, random state: every output within 1e-12 of the reference's, in protocol shape."""
    assert_fast_graph_is_the_reference_step(CONFIGS[name], name)


@pytest.mark.integration   # exports two models
def test_fast_and_plain_exports_agree_and_keep_the_int8_node_groups(tmp_path, carphone_128):
    from stae_deploy.export.to_onnx import ExportSettings, export_onnx
    from stae_deploy.runtime.onnx_session import OnnxStepper

    model = seeded_model(SMALL_CONFIG)
    paths = {}
    for graph in ("plain", "fast"):
        paths[graph] = tmp_path / f"{graph}.onnx"
        metadata = export_onnx(model, paths[graph], random_provenance(model), ExportSettings(graph=graph)).metadata
        assert metadata.notes["graph"] == graph
    fast_metadata = OnnxStepper(paths["fast"]).metadata
    assert fast_metadata.notes["graph_rewrites"]["decompose_softmax"] == 2 * SMALL_CONFIG.layers
    # Layers after the first read H^{k-1} with conv_t, conv_s and conv_o: merged.
    assert fast_metadata.notes["graph_rewrites"]["merge_sibling_convs"] >= SMALL_CONFIG.layers - 1
    plain_groups = group_nodes(onnx.load(str(paths["plain"])))
    fast_groups = group_nodes(onnx.load(str(paths["fast"])))
    conv_groups = {g for g in plain_groups if not g.startswith("op:")}
    assert conv_groups <= set(fast_groups), sorted(conv_groups - set(fast_groups))
    steppers = {graph: OnnxStepper(path) for graph, path in paths.items()}
    states = {graph: stepper.zero_state() for graph, stepper in steppers.items()}
    frames = carphone_128[:10, :, :64, :64]
    for step, frame in enumerate(frames, start=1):
        outputs = {}
        for graph, stepper in steppers.items():
            _, states[graph], outputs[graph] = stepper.step(frame[None], states[graph])
        for name, plain in outputs["plain"].items():
            error = float(np.max(np.abs(outputs["fast"][name] - plain)))
            assert error <= 2e-5 * max(1.0, float(np.max(np.abs(plain)))), \
                f"step {step}: '{name}' fast vs plain differs by {error:.3g}"


def test_unknown_graph_formulation_is_refused(tmp_path):
    from stae_deploy.export.to_onnx import ExportSettings

    with pytest.raises(ConfigError, match="graph: expected one of"):
        ExportSettings(graph="fastest")


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_softmax_over_a_leading_axis_is_decomposed_exactly():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 5, 3, 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 5, 3, 4])
    z = helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [2, 5, 3, 4])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], "ring", axis=1),
                               helper.make_node("Softmax", ["x"], ["z"], "last", axis=-1)],
                              "g", [x], [y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    feeds = {"x": np.random.default_rng(0).normal(0, 30, (2, 5, 3, 4)).astype(np.float32)}
    before = _run(model, feeds)
    assert decompose_softmax(model) == 1                      # the last-axis one is left alone
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Softmax") == 1
    for want, got in zip(before, _run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_sibling_convs_merge_into_one_with_the_same_outputs():
    rng = np.random.default_rng(0)
    weights = {f"w{i}": rng.normal(size=(c, 3, 3, 3)).astype(np.float32)
               for i, c in enumerate((4, 6))}
    biases = {f"b{i}": rng.normal(size=(c,)).astype(np.float32) for i, c in enumerate((4, 6))}
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    outputs = [helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, shape)
               for i, shape in enumerate(([1, 4, 8, 8], [1, 6, 8, 8], [1, 6, 6, 6]))]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["y0"], "a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["y1"], "b", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w1", "b1"], ["y2"], "c", pads=[0, 0, 0, 0])]
    initializers = [numpy_helper.from_array(v, k) for k, v in {**weights, **biases}.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outputs, initializers),
                              opset_imports=[helper.make_opsetid("", 20)])
    feeds = {"x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32)}
    before = _run(model, feeds)
    assert merge_sibling_convs(model) == 1                    # "c" has other padding
    onnx.checker.check_model(model, full_check=True)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [c.input[1] for c in convs] == ["w0+w1", "w1"]
    for want, got in zip(before, _run(model, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
