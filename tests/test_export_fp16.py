"""FP16 graphs (ModelOpt AutoCast): convolutions in FP16, the recurrent state path, normalisation
and softmax in FP32, the I/O precision a recorded choice, and the prediction >= 40 dB from the
FP32 reference on real frames."""
import numpy as np
import onnx
import pytest

from stae_deploy.verify.checks import check_artifact, static_checks
from stae_deploy.calibration.fp16 import DEFAULT_FP16_OP_TYPES, FP16Settings, convert_fp16
from stae_deploy.export.onnx_graph import load_model, read_metadata
from stae_deploy.runtime.errors import ArtifactError, ConfigError
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.stae_ref.footage import load_clip


@pytest.fixture(scope="module")
def fp16_onnx_256(default_onnx_256, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "stae256.fp16.onnx"
    convert_fp16(default_onnx_256[0], path)
    return path


def test_fp16_graph_passes_the_static_checks_and_records_its_choices(fp16_onnx_256,
                                                                     default_onnx_256):
    report, graph = static_checks(fp16_onnx_256)
    assert all(c.passed for c in report.checks), report.checks
    metadata = read_metadata(graph, str(fp16_onnx_256))
    assert metadata.precision == "fp16"
    assert {t.dtype for t in (*metadata.spec.inputs, *metadata.spec.outputs)} == {"float32"}
    assert metadata.notes["fp16"]["io_precision"] == "fp32"
    assert metadata.notes["fp16"]["fp16_op_types"] == list(DEFAULT_FP16_OP_TYPES)
    assert metadata.notes["random_seed"] == 0          # the reference can still be rebuilt
    assert fp16_onnx_256.stat().st_size < 0.55 * default_onnx_256[0].stat().st_size


def test_convs_compute_in_fp16_and_the_state_path_in_fp32(fp16_onnx_256, default_onnx_256):
    inferred = onnx.shape_inference.infer_shapes(load_model(fp16_onnx_256))
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    convs = [n for n in inferred.graph.node if n.op_type == "Conv"]
    fp32_convs = [n for n in load_model(default_onnx_256[0]).graph.node if n.op_type == "Conv"]
    assert len(convs) == len(fp32_convs)
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in convs)
    # The ATT softmax is Softmax in the plain graph, ReduceMax/Exp/ReduceSum/Div in the fast one.
    kept = [n for n in inferred.graph.node
            if n.op_type in ("InstanceNormalization", "Softmax", "Exp", "Sigmoid", "Tanh",
                             "ReduceSum")]
    assert len(kept) > 36 + 8
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in kept), \
        [n.name for n in kept if types[n.output[0]] != onnx.TensorProto.FLOAT]


def test_fp16_predicts_within_40_db_of_the_fp32_reference(fp16_onnx_256, default_onnx_256):
    frames = load_clip("city", (256, 256), max_frames=24)
    report = check_artifact(fp16_onnx_256, default_onnx_256[1], frames, steps=20, horizon=4,
                            progress=False)
    assert report.passed, report.parity.failures
    assert min(report.parity.pred_psnr_db) >= 40.0
    assert max(report.parity.state_rel_per_step) < 0.05


def test_fp16_io_rounds_the_state_every_step(fp16_onnx_256, default_onnx_256, tmp_path):
    narrow_path = tmp_path / "fp16io.onnx"
    convert_fp16(default_onnx_256[0], narrow_path, FP16Settings(io_precision="fp16"))
    narrow, wide = OnnxStepper(narrow_path), OnnxStepper(fp16_onnx_256)
    assert narrow.spec.tensor("temporal_ring").dtype == "float16"
    frames = load_clip("city", (256, 256), max_frames=3)
    narrow_state, wide_state = narrow.zero_state(), wide.zero_state()
    for t in range(3):
        _, narrow_state, _ = narrow.step(frames[t][None], narrow_state)
        _, wide_state, _ = wide.step(frames[t][None], wide_state)
    rounded = wide_state["temporal_ring"].astype(np.float16).astype(np.float32)
    assert not np.array_equal(rounded, wide_state["temporal_ring"])   # FP32 state kept its bits


def test_bad_precision_choices_are_refused(fp16_onnx_256, default_onnx_256, tmp_path):
    with pytest.raises(ArtifactError, match="precision is fp16; convert an fp32 export"):
        convert_fp16(fp16_onnx_256, tmp_path / "again.onnx")
    with pytest.raises(ConfigError, match=r"fp16_op_types: \['Softmax'\] must stay FP32"):
        FP16Settings(fp16_op_types=("Conv", "Softmax"))
