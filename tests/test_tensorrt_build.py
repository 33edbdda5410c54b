"""TensorRT engine building: type-checked against TensorRT's API here, run only where TensorRT
is (it cannot be installed on these machines; those tests skip with that reason)."""
import json
import subprocess
from pathlib import Path

import pytest

from stae_deploy.export.build_engine import BuildConfig, build_engine, trtexec_command
from stae_deploy.runtime.artifact import read_engine_sidecar, write_engine_sidecar
from stae_deploy.runtime.errors import ArtifactError, ConfigError, TensorRTUnavailableError
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.state_spec import io_spec

from conftest import requires_cuda, requires_tensorrt, tensorrt_available

ROOT = Path(__file__).resolve().parents[1]
PYRIGHT = ROOT / ".tools" / "node_modules" / ".bin" / "pyright"
needs_pyright = pytest.mark.skipif(not PYRIGHT.exists(),
                                   reason="pyright not installed; run `make typecheck`")


@needs_pyright
def test_tensorrt_code_is_clean_against_the_tensorrt_stubs():
    result = subprocess.run([str(PYRIGHT)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout
    assert "0 errors" in result.stdout


@needs_pyright
def test_the_type_check_catches_a_wrong_tensorrt_call(tmp_path):
    """Proof that the check can fail: a string where execute_async_v3 wants a stream handle."""
    planted = ROOT / "export" / "_planted_wrong_call.py"
    planted.write_text("import tensorrt as trt\n\n\n"
                       "def run(context: trt.IExecutionContext) -> None:\n"
                       "    context.execute_async_v3('stream')\n")
    try:
        result = subprocess.run([str(PYRIGHT), str(planted)], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
    finally:
        planted.unlink()
    assert result.returncode == 1
    assert 'parameter "stream_handle"' in result.stdout


def test_trtexec_line_for_a_dynamic_batch_graph():
    spec = io_spec(STAEConfig(frame_size=(256, 256)), batch="batch")
    line = trtexec_command("stae.onnx", "stae.engine", spec, BuildConfig(opt_batch=2, max_batch=4))
    assert line.startswith("trtexec --onnx=stae.onnx --saveEngine=stae.engine --stronglyTyped")
    assert "--minShapes=frame:1x3x256x256,clip_window:1x1x3x256x256,hidden:1x4x64x2x8x8" in line
    assert "--optShapes=frame:2x3x256x256" in line and "temporal_ring:4x4x5x64x2x8x8" in line
    static = trtexec_command("a.onnx", "a.engine", io_spec(STAEConfig()), BuildConfig())
    assert "Shapes" not in static and "--memPoolSize=workspace:4096M" in static


def test_build_config_validates_and_round_trips():
    config = BuildConfig(workspace_mib=1024, opt_batch=2, max_batch=8, timing_cache="t.cache")
    assert BuildConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="opt_batch/max_batch"):
        BuildConfig(opt_batch=9, max_batch=8)


@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here")
def test_without_tensorrt_build_fails_in_one_sentence(default_onnx_256, tmp_path, capsys):
    from stae_deploy.cli.main import main

    assert main(["build", str(default_onnx_256[0]), "-o", str(tmp_path / "e.engine")]) == 2
    err = capsys.readouterr().err
    assert "trtexec --onnx=" in err
    assert "error: TensorRT is not installed on this machine" in err and "Traceback" not in err
    with pytest.raises(TensorRTUnavailableError):
        build_engine(default_onnx_256[0], tmp_path / "e.engine", BuildConfig())


def test_engine_sidecar_round_trip_and_missing_sidecar(default_onnx_256, tmp_path):
    from stae_deploy.export.onnx_graph import load_model, read_metadata

    metadata = read_metadata(load_model(default_onnx_256[0]), "x")
    engine = tmp_path / "stae.engine"
    write_engine_sidecar(engine, metadata, {"tensorrt_version": "10.13"})
    restored, build = read_engine_sidecar(engine)
    assert restored.spec == metadata.spec and build == {"tensorrt_version": "10.13"}
    with pytest.raises(ArtifactError, match="other.engine: its sidecar .*other.engine.json is missing"):
        read_engine_sidecar(tmp_path / "other.engine")


@requires_tensorrt
@requires_cuda
def test_build_writes_engine_and_sidecar(default_onnx_256, tmp_path):
    engine = build_engine(default_onnx_256[0], tmp_path / "stae.engine",
                          BuildConfig(timing_cache=str(tmp_path / "timing.cache")))
    metadata, build = read_engine_sidecar(engine)
    assert metadata.spec == default_onnx_256[1].spec()
    assert build["source_onnx_sha256"] and build["tensorrt_version"]
    assert (tmp_path / "timing.cache").stat().st_size > 0
