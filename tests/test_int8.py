"""INT8 for a recurrent model: the calibration file follows the protocol, both targets write
Q/DQ graphs that keep the protocol and the policy's FP32 islands, and drift is measured against
the FP32 model with a control that separates build-up from per-step error."""
import json

import numpy as np
import onnx
import pytest

from stae_deploy.calibration.bias_correction import measure_bias_errors, quantized_convs
from stae_deploy.calibration.calib_data import (batches, info_path, load_calibration, load_calibration_info,
                                    save_calibration)
from stae_deploy.calibration.drift import mean_over_streams, measure_drift, slope_per_100_steps
from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.calibration.policy import DEFAULT_POLICY, QuantPolicy
from stae_deploy.calibration.quantize import quantize_model
from stae_deploy.calibration.record import calibration_streams, record_calibration
from stae_deploy.calibration.sensitivity import sweep_policies
from stae_deploy.calibration.unbounded_state import unbounded_state_convs
from stae_deploy.export.onnx_graph import load_model, read_metadata
from stae_deploy.runtime.errors import ArtifactError, CalibrationError, ConfigError, OutputExistsError
from stae_deploy.runtime.onnx_session import open_session

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def small_calibration(small_onnx_path, tmp_path_factory):
    """The small export calibrated on 24 steps of carphone's training frames: (npz path, info)."""
    model_path = small_onnx_path[0]
    streams = calibration_streams((64, 64), ("carphone",), (), steps=24)
    tensors, info = record_calibration(model_path, streams, warmup=0, every=3, progress=False)
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    save_calibration(path, tensors, info)
    return path, info


@pytest.fixture(scope="module", params=["tensorrt", "onnxruntime"])
def small_int8(request, small_onnx_path, small_calibration, tmp_path_factory):
    path = tmp_path_factory.mktemp("int8") / f"small.{request.param}.int8.onnx"
    quantize_model(small_onnx_path[0], small_calibration[0], path, target=request.param)
    return request.param, path


def test_calibration_file_holds_every_graph_input_as_the_protocol_defines_it(small_onnx_path,
                                                                           small_calibration):
    path, info = small_calibration
    spec = open_session(small_onnx_path[0])[1].spec
    tensors = load_calibration(path, spec)
    assert list(tensors) == [t.name for t in spec.inputs]
    for tensor in spec.inputs:
        array = tensors[tensor.name]
        assert array.shape == (8, *tensor.per_sample_shape), tensor.name     # steps 0, 3, ..., 21
        assert str(array.dtype) == tensor.dtype, tensor.name
    assert not tensors["hidden"][0].any(), "step 0 (a zero state) is calibrated too"
    assert tensors["hidden"][-1].any()
    assert info.samples == 8 and info.sources == {"carphone": 24}
    assert info.ranges["frame"].max <= 1.0
    assert load_calibration_info(path) == info and info.protocol == spec.to_dict()


def test_a_calibration_file_for_another_model_is_refused_naming_the_tensor(small_onnx_path,
                                                                           small_calibration,
                                                                           tmp_path):
    spec = open_session(small_onnx_path[0])[1].spec
    tensors = dict(np.load(small_calibration[0]))
    tensors["hidden"] = tensors["hidden"][:, :, :4]
    np.savez(tmp_path / "wrong.npz", **tensors)
    with pytest.raises(CalibrationError, match=r"tensor 'hidden' is float32 \(3, 4, .*expects "
                                               r"float32 \(3, 8,"):
        load_calibration(tmp_path / "wrong.npz", spec)
    del tensors["hidden"]
    np.savez(tmp_path / "missing.npz", **tensors)
    with pytest.raises(CalibrationError, match=r"missing \['hidden'\]"):
        load_calibration(tmp_path / "missing.npz", spec)
    with pytest.raises(CalibrationError, match="no such calibration file"):
        load_calibration(tmp_path / "absent.npz", spec)


def test_quantize_refuses_a_calibration_recorded_with_another_model(default_onnx_256,
                                                                    small_onnx_path,
                                                                    small_calibration, tmp_path):
    info = json.loads(info_path(small_calibration[0]).read_text())
    forged = tmp_path / "calib.npz"
    forged.write_bytes(small_calibration[0].read_bytes())
    info_path(forged).write_text(json.dumps({**info, "model_sha256": "0" * 64}))
    with pytest.raises(CalibrationError, match="recorded with another model"):
        quantize_model(small_onnx_path[0], forged, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_int8_graph_keeps_the_protocol_and_records_how_it_was_made(small_int8, small_onnx_path):
    target, path = small_int8
    metadata = read_metadata(load_model(path), str(path))
    source = read_metadata(load_model(small_onnx_path[0]), str(small_onnx_path[0]))
    assert metadata.precision == "int8" and metadata.spec == source.spec
    assert metadata.notes["int8"]["target"] == target
    assert metadata.notes["int8"]["policy"] == DEFAULT_POLICY.to_dict()
    assert metadata.notes["int8"]["calibration_samples"] == 8


def test_int8_quantizes_the_convs_and_keeps_the_policys_groups_in_float(small_int8,
                                                                        small_onnx_path):
    target, path = small_int8
    graph = load_model(path).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [n for n in convs if n.input[0] in dequantized and n.input[1] in dequantized]
    kept = [n for n in convs if n.input[1].split("_DequantizeLinear")[0].startswith(
        ("frame_fuse.", "time_collapse.")) or ".to_pixels." in n.input[1]]
    assert len(kept) == 2 + 3 and not any(n.input[0] in dequantized for n in kept), \
        "the head and the decoders' to_pixels convs stay FP32"
    fp32 = load_model(small_onnx_path[0])
    ring_fed = {n.input[1] for n in fp32.graph.node if n.name in unbounded_state_convs(
        fp32, read_metadata(fp32, "small.onnx").spec)}
    assert ring_fed == {f"cell.layers.{k}.{conv}" for k in range(3) for conv in (
        "conv_m.conv.weight", "conv_cm.conv.weight", "fuse.weight")} | {
        "spatial_decoder.stages.0.conv.weight", "temporal_decoder.stages.0.conv.weight"}, \
        "the paper's STAM's unbounded memories feed each layer's conv_m, conv_cm and fuse, " \
        "and SD and TD read M and C"
    ring_convs = [n for n in convs if n.input[1].split("_DequantizeLinear")[0] in ring_fed]
    assert len(ring_convs) == len(ring_fed)
    assert not any(n.input[0] in dequantized for n in ring_convs), "they stay FP32"
    kept += ring_convs
    # ModelOpt's own placement leaves a few more in float (convs it finds no INT8 gain for)
    assert len(quantized) >= 0.7 * (len(convs) - len(kept)), "the other convolutions are INT8"
    state_writers = [n for n in graph.node if n.op_type in ("Softmax", "InstanceNormalization")]
    assert state_writers and not any(i in dequantized for n in state_writers for i in n.input)
    int8_weights = [t.name for t in graph.initializer
                    if t.data_type == onnx.TensorProto.INT8 and "weight" in t.name
                    and "zero_point" not in t.name]
    quantize_of_weights = [n for n in graph.node if n.op_type == "QuantizeLinear"
                           and n.input[0].endswith("weight")]
    if target == "onnxruntime":          # weights stored INT8
        assert len(int8_weights) == len(quantized)
    else:                                # ModelOpt: FP32 weights through Q/DQ, folded by TensorRT
        assert not int8_weights and len(quantize_of_weights) == len(quantized)


def test_bias_correction_removes_each_int8_convs_mean_error(small_int8, small_onnx_path,
                                                          small_calibration, tmp_path):
    """Measured on the calibration data with the FP32 model's own conv inputs: without the
    correction every INT8 conv shifts its output mean; with it (the default) the shift is gone
    up to the INT32 bias step of the onnxruntime target."""
    target, corrected_path = small_int8
    uncorrected_path = tmp_path / "uncorrected.onnx"
    quantize_model(small_onnx_path[0], small_calibration[0], uncorrected_path, target=target,
                   bias_correction=False)
    fp32 = load_model(small_onnx_path[0])
    spec = open_session(small_onnx_path[0])[1].spec
    tensors = load_calibration(small_calibration[0], spec)
    shifts = {}
    for name, path in (("uncorrected", uncorrected_path), ("corrected", corrected_path)):
        convs = quantized_convs(load_model(path))
        errors = measure_bias_errors(fp32, convs, batches(tensors, spec))
        shifts[name] = {conv: float(np.abs(error).max()) for conv, error in errors.items()}
    assert shifts["corrected"].keys() == shifts["uncorrected"].keys() and shifts["corrected"]
    bias_steps = int32_bias_steps(load_model(corrected_path))
    for conv, before in shifts["uncorrected"].items():
        assert before > 1e-5, f"{conv}: an INT8 conv with no mean error to correct"
        assert shifts["corrected"][conv] <= 0.02 * before + 0.5 * bias_steps.get(conv, 0.0), \
            f"{conv}: mean error {before:.2e} -> {shifts['corrected'][conv]:.2e}"
    notes = read_metadata(load_model(corrected_path), str(corrected_path)).notes["int8"]
    assert notes["bias_correction"]["convs"] == len(shifts["corrected"])
    assert read_metadata(load_model(uncorrected_path), "").notes["int8"]["bias_correction"] is False


def int32_bias_steps(model: onnx.ModelProto) -> dict[str, float]:
    """Conv name -> the largest step of its INT32 bias (onnxruntime target); float biases absent."""
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    steps = {}
    for node in model.graph.node:
        bias = producers.get(node.input[2]) if node.op_type == "Conv" else None
        if bias is not None and bias.op_type == "DequantizeLinear":
            steps[node.name] = float(initializers[bias.input[1]].max())
    return steps


def test_int8_stays_close_to_fp32_and_the_control_separates_buildup(small_int8, small_onnx_path):
    target, path = small_int8
    frames = calibration_streams((64, 64), ("city",), (), steps=13)["city"]   # training frames
    report = measure_drift(small_onnx_path[0], {"int8": path}, {"city": frames}, progress=False)
    row = report["int8"]
    assert 30.0 < row["psnr_vs_fp32_db_mean"] < 120.0, row
    assert row["control_psnr_vs_fp32_db_mean"] >= row["psnr_vs_fp32_db_mean"] - 0.5
    trace = report["traces"]["city"]["int8"]
    np.testing.assert_allclose(trace["buildup"], np.subtract(trace["psnr_vs_fp32"],
                                                             trace["control_psnr_vs_fp32"]))
    assert len(trace["psnr_vs_fp32"]) == 12
    assert row["buildup_penalty_db_per_100_steps"] == pytest.approx([-np.mean(trace["buildup"])])


def test_the_fp32_model_against_itself_has_no_drift(small_onnx_path):
    frames = calibration_streams((64, 64), ("carphone",), (), steps=9)["carphone"]
    report = measure_drift(small_onnx_path[0], {"same": small_onnx_path[0]},
                           {"carphone": frames}, progress=False)
    row = report["same"]
    assert row["psnr_vs_fp32_db_mean"] == 120.0 and row["err_over_delta_mean"] == 0.0
    assert row["truth_gap_db"] == 0.0 and row["buildup_slope_db_per_100_steps"] == 0.0
    assert row["buildup_penalty_db_per_100_steps"] == [0.0]


def test_penalty_windows_average_over_streams_window_by_window():
    assert mean_over_streams([[1.0, 2.0, 9.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert mean_over_streams([1.0, 2.0]) == 1.5


def test_a_variant_cannot_take_the_reference_runs_name(small_onnx_path):
    with pytest.raises(ConfigError, match="'fp32' names the reference run"):
        measure_drift(small_onnx_path[0], {"fp32": small_onnx_path[0]}, {}, progress=False)


def test_buildup_slope_is_fitted_on_the_last_60_percent_in_db_per_100_steps():
    values = [0.0] * 40 + [-0.02 * t for t in range(60)]
    assert slope_per_100_steps(values) == pytest.approx(-2.0)


def test_policy_round_trips_and_names_bad_fields(small_onnx_path):
    policy = QuantPolicy(op_types=("Conv", "Add"), exclude_groups=("head", "to_pixels"))
    assert QuantPolicy.from_dict(json.loads(policy.to_json())) == policy
    with pytest.raises(ConfigError, match=r"exclude_groups: \['tail'\] are not groups"):
        QuantPolicy(exclude_groups=("tail",)).excluded_nodes(group_nodes(load_model(
            small_onnx_path[0])))
    with pytest.raises(ConfigError, match="op_types: 'all' cannot be combined"):
        QuantPolicy(op_types=("all", "Conv"))
    with pytest.raises(ConfigError, match=r"unknown quantisation policy fields \['op_type'\]"):
        QuantPolicy.from_dict({"op_type": ["Conv"]})


def test_sensitivity_sweep_quantizes_each_group_alone(small_onnx_path):
    model = load_model(small_onnx_path[0])
    groups = group_nodes(model)
    assert {"encoders", "cell_input", "cell_recurrent", "cell_memory", "decoders", "to_pixels",
            "head", "op:Exp"} <= set(groups)      # op:Exp: the fast graph's ATT softmax
    assert sum(map(len, groups.values())) == len(model.graph.node)
    policies = sweep_policies(model)
    for group in groups:
        kept_float = set(policies[f"only {group}"].excluded_nodes(groups))
        assert kept_float == {n.name for n in model.graph.node} - set(groups[group]), group


def test_quantize_never_touches_the_users_files(small_onnx_path, small_calibration, tmp_path):
    existing = tmp_path / "mine.onnx"
    existing.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="pass --force"):
        quantize_model(small_onnx_path[0], small_calibration[0], existing)
    assert existing.read_bytes() == b"keep me"
    source = tmp_path / "source" / "model.onnx"           # ModelOpt once rewrote its input
    source.parent.mkdir()
    source.write_bytes(small_onnx_path[0].read_bytes())
    before = (source.stat().st_mtime_ns, source.read_bytes())
    quantize_model(source, small_calibration[0], tmp_path / "q.onnx", target="tensorrt")
    assert (source.stat().st_mtime_ns, source.read_bytes()) == before
    assert sorted(p.name for p in source.parent.iterdir()) == ["model.onnx"]


def test_cli_errors_are_one_line_naming_the_file(small_onnx_path, tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "stae_deploy.cli.main", "quantize", str(small_onnx_path[0]),
                             "--calib", str(tmp_path / "none.npz"), "-o", str(tmp_path / "q.onnx")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"stae quantize: error: {tmp_path / 'none.npz'}: no such calibration file (record one "
        f"with `stae calibrate`)")


def test_int8_graph_passes_the_static_checks_tensorrt_lint_included(small_int8):
    from stae_deploy.verify.checks import static_checks

    report, _ = static_checks(small_int8[1])
    assert all(check.passed for check in report.checks), [c for c in report.checks if not c.passed]


@pytest.mark.integration   # exports a model
def test_quantize_checks_against_the_fp32_graph_when_the_checkpoint_is_not_given(
        tmp_path, capsys):
    """The README's `stae quantize stae.onnx --calib calib.npz -o stae.int8.onnx` on an export of
    a checkpoint: without --checkpoint the INT8 graph is compared with its FP32 source graph."""
    from stae_deploy.cli.main import main
    from stae_deploy.stae_ref.checkpoint import save_checkpoint
    from conftest import SMALL_CONFIG, seeded_model

    checkpoint, fp32 = tmp_path / "small.pt", tmp_path / "small.onnx"
    save_checkpoint(seeded_model(SMALL_CONFIG), checkpoint)
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(fp32), "--no-check"]) == 0
    streams = calibration_streams((64, 64), ("carphone",), (), steps=12)
    tensors, info = record_calibration(fp32, streams, warmup=0, every=3, progress=False)
    save_calibration(tmp_path / "calib.npz", tensors, info)
    capsys.readouterr()
    assert main(["quantize", str(fp32), "--calib", str(tmp_path / "calib.npz"), "-o",
                 str(tmp_path / "small.int8.onnx"), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "[PASS] parity vs FP32 graph small.onnx (int8)" in report, report


def test_only_an_fp32_graph_can_be_the_reference(small_int8):
    from stae_deploy.verify.parity import OnnxReference

    with pytest.raises(ArtifactError, match="precision is int8; a reference graph must be fp32"):
        OnnxReference(small_int8[1])
