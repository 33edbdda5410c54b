"""FP16 graphs (ModelOpt AutoCast): normalisation and softmax stay FP32, the I/O precision is a
recorded choice, and the prediction stays >= 40 dB from the FP32 reference on real frames."""
import numpy as np
import onnx
import pytest

from export.checks import check_artifact, static_checks
from export.fp16 import DEFAULT_FP32_OP_TYPES, convert_fp16
from export.onnx_graph import load_model, read_metadata
from runtime.errors import ArtifactError
from runtime.onnx_session import OnnxStepper
from stae_ref.footage import load_clip


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
    assert {t.dtype for t in (*metadata.spec.inputs, *metadata.spec.outputs)} == {"float16"}
    assert metadata.notes["fp16"]["io_precision"] == "fp16"
    assert metadata.notes["fp16"]["fp32_op_types"] == list(DEFAULT_FP32_OP_TYPES)
    assert metadata.notes["random_seed"] == 0          # the reference can still be rebuilt
    assert fp16_onnx_256.stat().st_size < 0.55 * default_onnx_256[0].stat().st_size


def test_normalisation_and_softmax_compute_in_fp32(fp16_onnx_256):
    inferred = onnx.shape_inference.infer_shapes(load_model(fp16_onnx_256))
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    kept = [n for n in inferred.graph.node if n.op_type in ("InstanceNormalization", "Softmax")]
    assert len(kept) == 36 + 8                 # 36 GroupNorms (as InstanceNorm), 8 ATT softmaxes
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in kept)
    convs = [n for n in inferred.graph.node if n.op_type == "Conv"]
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in convs)


def test_fp16_predicts_within_40_db_of_the_fp32_reference(fp16_onnx_256, default_onnx_256):
    frames = load_clip("city", (256, 256), max_frames=24)
    report = check_artifact(fp16_onnx_256, default_onnx_256[1], frames, steps=20, horizon=4,
                            progress=False)
    assert report.passed, report.parity.failures
    assert min(report.parity.pred_psnr_db) >= 40.0
    assert max(report.parity.state_rel_per_step) < 0.05


def test_fp32_io_gives_the_same_numbers_as_fp16_io(fp16_onnx_256, default_onnx_256, tmp_path):
    """AutoCast casts FP32 state inputs to FP16 on entry: FP32 I/O only costs memory."""
    fp32_io = tmp_path / "fp32io.onnx"
    convert_fp16(default_onnx_256[0], fp32_io, io_precision="fp32")
    wide, narrow = OnnxStepper(fp32_io), OnnxStepper(fp16_onnx_256)
    assert wide.spec.tensor("hidden").dtype == "float32"
    frames = load_clip("city", (256, 256), max_frames=3)
    wide_state, narrow_state = wide.zero_state(), narrow.zero_state()
    for t in range(3):
        wide_pred, wide_state, _ = wide.step(frames[t][None], wide_state)
        narrow_pred, narrow_state, _ = narrow.step(frames[t][None], narrow_state)
        np.testing.assert_array_equal(wide_pred, narrow_pred.astype(np.float32),
                                      err_msg=f"step {t + 1}")


def test_only_fp32_graphs_are_converted(fp16_onnx_256, tmp_path):
    with pytest.raises(ArtifactError, match="precision is fp16; convert an fp32 export"):
        convert_fp16(fp16_onnx_256, tmp_path / "again.onnx")
