"""Export: one step as ONNX whose I/O and metadata are the state protocol, checked, and
predicting what the reference predicts step after step (the fp32 tolerances of verify/parity.py)."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from stae_deploy.verify.checks import check_artifact, static_checks
from stae_deploy.export.onnx_graph import graph_io, load_model, read_metadata, save_model, write_metadata
from stae_deploy.verify.parity import TOLERANCES
from stae_deploy.verify.reference import reference_for
from stae_deploy.verify.tensorrt_lint import lint_for_tensorrt
from stae_deploy.export.to_onnx import ExportSettings, export_onnx
from stae_deploy.runtime.artifact import ArtifactMetadata
from stae_deploy.runtime.errors import ArtifactError, OutputExistsError, SpecMismatchError
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.stae_ref.checkpoint import save_checkpoint, weights_sha256
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import forward_backward, load_clip

from conftest import SMALL_CONFIG, random_provenance, seeded_model


@pytest.fixture(scope="module")
def small_onnx(small_onnx_path):
    return small_onnx_path


def test_graph_io_and_metadata_are_the_protocol(small_onnx):
    path, model = small_onnx
    graph = load_model(path)
    metadata = read_metadata(graph, str(path))
    assert metadata.spec == model.spec()
    inputs, outputs = graph_io(graph)
    assert [t.name for t in inputs] == [t.name for t in model.spec().inputs]
    assert [t.name for t in outputs] == [t.name for t in model.spec().outputs]
    assert STAEConfig.from_dict(metadata.config) == SMALL_CONFIG
    assert metadata.precision == "fp32" and metadata.checkpoint_sha256 is None
    provenance = random_provenance(model)
    assert {key: metadata.notes[key] for key in provenance} == provenance
    assert metadata.notes["graph"] == "fast"                  # the default formulation
    assert metadata.preprocessing["color"] == "RGB" and metadata.preprocessing["layout"] == "NCHW"
    ops = {node.op_type for node in graph.graph.node}
    assert not ops & {"Loop", "Scan", "If", "ConvTranspose"}
    initializers = {i.name for i in graph.graph.initializer}
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in initializers for n in convs)


def test_static_checks_pass(small_onnx):
    report, _ = static_checks(small_onnx[0])
    assert [c.name for c in report.checks][:2] == ["onnx.checker", "shape inference"]
    assert all(c.passed for c in report.checks), report.checks


def test_default_config_at_256_matches_the_reference_step_after_step(default_onnx_256):
    """The fp32 bounds on real frames: step-1 rel <= 1e-4 per tensor, PSNR >= 60 dB."""
    path, model = default_onnx_256
    frames = load_clip("city", (256, 256), max_frames=24)
    report = check_artifact(path, model, frames, steps=20, horizon=4, progress=False)
    assert report.passed, report.parity.failures
    parity = report.parity
    assert set(parity.step1_max_rel) == {t.name for t in model.spec().outputs}
    for tensor, rel in parity.step1_max_rel.items():
        assert rel <= TOLERANCES["fp32"].limit(tensor), f"step 1, {tensor}: {rel:.2e}"
    assert parity.pred_psnr_db_min >= 60.0
    assert parity.max_abs["next_clip_window"] == 0.0       # a pure copy must be exact
    assert len(parity.closed_loop["prediction_max_abs"]) == 4


def test_a_mismatched_protocol_is_refused_naming_the_tensor(small_onnx, tmp_path):
    path, model = small_onnx
    graph = load_model(path)
    metadata = read_metadata(graph, str(path))
    other_tau = STAEConfig.from_dict({**SMALL_CONFIG.to_dict(), "tau": 4})
    from stae_deploy.stae_ref.state_spec import io_spec

    edited = ArtifactMetadata(spec=io_spec(other_tau), config=other_tau.to_dict(),
                              notes=metadata.notes)
    write_metadata(graph, edited)
    bad = save_model(graph, tmp_path / "tau4.onnx")
    with pytest.raises(SpecMismatchError, match=r"input 'temporal_ring': graph shape \(1, 3, 3,"):
        static_checks(bad)
    with pytest.raises(SpecMismatchError, match="output 'next_spatial_ring'"):
        OnnxStepper(bad)


def test_foreign_truncated_and_missing_files_are_refused(small_onnx, tmp_path):
    path, _ = small_onnx
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: 1 << 16])
    for load in (static_checks, OnnxStepper):
        with pytest.raises(ArtifactError, match="truncated.onnx: it begins like an ONNX model but "
                                                "does not parse"):
            load(truncated)
    foreign = tmp_path / "foreign.onnx"
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), foreign)
    with pytest.raises(ArtifactError, match="foreign.onnx: metadata keys .* missing; it was not "
                                            "exported by stae-deploy"):
        OnnxStepper(foreign)
    with pytest.raises(ArtifactError, match="nothere.onnx: no such ONNX file"):
        OnnxStepper(tmp_path / "nothere.onnx")


def test_export_refuses_to_overwrite(small_onnx, tmp_path):
    target = tmp_path / "mine.onnx"
    target.write_text("user's file")
    with pytest.raises(OutputExistsError, match="mine.onnx already exists; pass --force"):
        export_onnx(small_onnx[1], target, {})
    assert target.read_text() == "user's file"


@pytest.mark.integration   # exports a model
def test_dynamic_batch_runs_any_batch_like_the_reference(tmp_path):
    model = seeded_model(SMALL_CONFIG)
    path = tmp_path / "dyn.onnx"
    metadata = export_onnx(model, path, random_provenance(model), ExportSettings(dynamic_batch=True)).metadata
    assert {t.shape[0] for t in (*metadata.spec.inputs, *metadata.spec.outputs)} == {"batch"}
    stepper = OnnxStepper(path)
    frames = torch.rand(3, 3, 3, 64, 64)                      # (T, B, 3, H, W)
    state, ref_state = stepper.zero_state(batch=3), model.zero_state(batch=3)
    for t in range(3):
        prediction, state, _ = stepper.step(frames[t].numpy(), state)
        with torch.no_grad():
            ref_prediction, ref_state = model.step(frames[t], ref_state)
        np.testing.assert_allclose(prediction, ref_prediction.numpy(), atol=1e-4, rtol=0,
                                   err_msg=f"step {t + 1}")


@pytest.mark.integration   # exports a model
def test_checkpoint_provenance_is_enforced(tmp_path):
    model = seeded_model(SMALL_CONFIG, seed=5)
    checkpoint = tmp_path / "small.pt"
    digest = save_checkpoint(model, checkpoint)
    path = tmp_path / "small.onnx"
    provenance = {"checkpoint_sha256": digest, "weights_sha256": weights_sha256(model)}
    metadata = export_onnx(model, path, provenance).metadata
    assert metadata.checkpoint_sha256 == digest
    with pytest.raises(ArtifactError, match="pass --checkpoint"):
        reference_for(metadata, str(path))
    rebuilt = reference_for(metadata, str(path), checkpoint)
    assert weights_sha256(rebuilt) == weights_sha256(model)
    other = tmp_path / "other.pt"
    save_checkpoint(seeded_model(SMALL_CONFIG, seed=6), other)
    with pytest.raises(ArtifactError, match=rf"sha256 {digest}, but .*other.pt has sha256"):
        reference_for(metadata, str(path), other)


def tiny_graph(nodes, inputs, outputs, initializers=(), opset=20):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_lint_flags_unsupported_ops_dtypes_and_tensor_weights():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    model = tiny_graph([helper.make_node("Unique", ["x"], ["u"], name="uniq"),
                        helper.make_node("Relu", ["x"], ["y"], name="ok")],
                       [x], [helper.make_tensor_value_info("u", TensorProto.FLOAT, None),
                             helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    findings = lint_for_tensorrt(model)
    assert [str(f) for f in findings] == [
        "Unique node 'uniq': not supported by TensorRT 10.15's ONNX parser"]

    conv = tiny_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv_tensor_weight")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4]),
                       helper.make_tensor_value_info("w", TensorProto.FLOAT, [1, 1, 3, 3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])])
    assert "weight 'w' is not a constant initializer" in str(lint_for_tensorrt(conv)[0])

    double = tiny_graph([helper.make_node("Sigmoid", ["x"], ["y"], name="sig64")],
                        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2])],
                        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2])])
    assert "tensor 'x' is DOUBLE" in str(lint_for_tensorrt(double)[0])

    old = tiny_graph([helper.make_node("Relu", ["x"], ["y"])],
                     [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], opset=8)
    assert "opset 8 is outside TensorRT 10.15's supported range 9..24" in str(lint_for_tensorrt(old)[0])


def test_lint_passes_the_exported_model(default_onnx_256):
    assert lint_for_tensorrt(load_model(default_onnx_256[0])) == []


@pytest.mark.integration   # exports and checks a model
def test_cli_export_then_check_json(tmp_path, capsys):
    from stae_deploy.cli.main import main

    config = tmp_path / "small.json"
    config.write_text(SMALL_CONFIG.to_json())
    onnx_path = tmp_path / "small.onnx"
    assert main(["export", "--config", str(config), "-o", str(onnx_path), "--steps", "3",
                 "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "SEEDED RANDOM WEIGHTS" in captured.err and "PASSED" in captured.out
    assert main(["check", str(onnx_path), "--steps", "6", "--horizon", "2", "--clip", "carphone",
                 "--json", "--quiet", "--plot", str(tmp_path / "errors.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["steps"] == 6
    assert set(report) >= {"max_abs", "step1_max_rel", "worst", "pred_psnr_db_min", "steps"}
    assert set(report["worst"]) >= {"step", "tensor", "value"}
    assert (tmp_path / "errors.png").stat().st_size > 0
    assert main(["export", "--config", str(config), "-o", str(onnx_path)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err


def test_check_fails_with_exit_1_when_a_tolerance_is_broken(small_onnx, capsys):
    from stae_deploy.cli.main import main

    assert main(["check", str(small_onnx[0]), "--steps", "2", "--horizon", "1", "--clip",
                 "carphone", "--quiet", "--tol", "next_hidden=1e-12"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: step 1: 'next_hidden' relative error" in out and "FAILED" in out
    assert main(["check", str(small_onnx[0]), "--quiet", "--tol", "hidden=1e-3"]) == 2
    assert "tolerance_overrides: ['hidden'] are not outputs of" in capsys.readouterr().err


def test_forward_backward_playback_is_continuous():
    frames = np.arange(4)
    assert forward_backward(frames, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_polygraphy_runs_the_saved_reference_data(default_onnx_256, tmp_path):
    """The onnxruntime half of `polygraphy run ... --trt --load-inputs --load-outputs`."""
    import subprocess
    import sys
    from pathlib import Path

    from stae_deploy.verify.polygraphy_io import polygraphy_command, save_polygraphy_data

    path, model = default_onnx_256
    frames = load_clip("city", (256, 256), max_frames=2)
    inputs, outputs = save_polygraphy_data(model.spec(), model, frames, 2, tmp_path)
    command = polygraphy_command(path, inputs, outputs, "--onnxrt", 1e-4, 1e-4).split()
    polygraphy = Path(sys.executable).with_name("polygraphy")
    result = subprocess.run([str(polygraphy), *command[1:]], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Passed: 2/2 iterations" in result.stdout + result.stderr
