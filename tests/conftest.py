"""Shared fixtures: seeded reference models and real footage (fetched once, then cached)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model import STAE

# A small STAE for tests that run many steps: every mechanism of the default, fewer channels.
SMALL_CONFIG = STAEConfig(frame_size=(64, 64), patch=4, stride2_stages=1, hidden=8, layers=3,
                          tau=3, kernel=(3, 3, 3))


def seeded_model(config: STAEConfig, seed: int = 0) -> STAE:
    """A reference model with reproducible random weights, in eval mode."""
    torch.manual_seed(seed)
    return STAE(config).eval()


@pytest.fixture(scope="session")
def default_model() -> STAE:
    """The paper's configuration (frame size 512 in its config), seeded random weights."""
    return seeded_model(STAEConfig())


@pytest.fixture(scope="session")
def small_model() -> STAE:
    return seeded_model(SMALL_CONFIG)


@pytest.fixture(scope="session")
def carphone_128() -> np.ndarray:
    """Real footage: all 120 carphone frames at 128x128, (120, 3, 128, 128) float32."""
    from stae_deploy.stae_ref.footage import load_clip

    return load_clip("carphone", (128, 128))


def random_provenance(model: STAE, seed: int = 0) -> dict:
    """Provenance of seeded random weights, as `stae export` records it."""
    from stae_deploy.stae_ref.checkpoint import weights_sha256

    return {"random_seed": seed, "weights_sha256": weights_sha256(model)}


@pytest.fixture(scope="session")
def default_onnx_256(tmp_path_factory):
    """The paper's configuration exported at 256x256 (seeded random weights): (path, model)."""
    from stae_deploy.export.to_onnx import export_onnx

    model = seeded_model(STAEConfig(frame_size=(256, 256)))
    path = tmp_path_factory.mktemp("export") / "stae256.onnx"
    export_onnx(model, path, random_provenance(model))
    return path, model


@pytest.fixture(scope="session")
def small_onnx_path(tmp_path_factory):
    """SMALL_CONFIG exported to ONNX (seeded random weights): (path, model)."""
    from stae_deploy.export.to_onnx import export_onnx

    model = seeded_model(SMALL_CONFIG)
    path = tmp_path_factory.mktemp("export") / "small.onnx"
    export_onnx(model, path, random_provenance(model))
    return path, model


@pytest.fixture(scope="session")
def small_dynamic_onnx_path(tmp_path_factory) -> Path:
    """SMALL_CONFIG exported with a dynamic batch axis (seeded random weights)."""
    from stae_deploy.export.to_onnx import ExportSettings, export_onnx

    model = seeded_model(SMALL_CONFIG)
    path = tmp_path_factory.mktemp("export") / "small_dynamic.onnx"
    export_onnx(model, path, random_provenance(model), ExportSettings(dynamic_batch=True))
    return path


DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "stae_ref/checkpoints/demo/stae_demo.pt"


@pytest.fixture(scope="session")
def demo_dynamic_onnx_path(tmp_path_factory) -> Path:
    """The committed demo checkpoint (128x128) exported with a dynamic batch axis: the model
    several camera streams share."""
    from stae_deploy.export.to_onnx import ExportSettings, export_onnx
    from stae_deploy.runtime.files import sha256_file
    from stae_deploy.stae_ref.checkpoint import load_checkpoint, weights_sha256

    model, _ = load_checkpoint(DEMO_CHECKPOINT)
    path = tmp_path_factory.mktemp("export") / "demo_dynamic.onnx"
    export_onnx(model.eval(), path, {"checkpoint": str(DEMO_CHECKPOINT),
                                     "checkpoint_sha256": sha256_file(DEMO_CHECKPOINT),
                                     "weights_sha256": weights_sha256(model)},
                ExportSettings(dynamic_batch=True))
    return path


def tensorrt_available() -> bool:
    """True where the real TensorRT imports (its type stubs alone import as an empty package)."""
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


def cuda_device_count() -> int:
    """CUDA devices that cuda-python (what the runtime's TensorRT backend uses) can see; 0 where
    cuda-python is absent or the driver reports an error."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if int(err) == 0 else 0


# Marks registered in pyproject.toml; pytest_collection_modifyitems turns them into skips.
requires_tensorrt = pytest.mark.requires_tensorrt
requires_cuda = pytest.mark.requires_cuda

# Fixtures that export an ONNX model or run a whole pipeline (each several seconds on 2 cores): a
# test that requests one, directly or through another fixture, is marked `integration`, which
# `make test-fast` leaves out. Tests that export or train in their own body carry the mark.
INTEGRATION_FIXTURES = {
    "default_onnx_256", "small_onnx_path", "small_dynamic_onnx_path", "demo_dynamic_onnx_path",
    "dynamic_onnx",     # test_triton.py: a dynamic-batch export of its own
    "bench_run",        # test_bench.py: a whole `stae bench` run
}


@pytest.hookimpl(tryfirst=True)   # before `-m` selects on the marks added here
def pytest_collection_modifyitems(config, items):
    """Mark tests on heavy fixtures `integration`; skip `requires_tensorrt` / `requires_cuda`
    tests, with the reason, where TensorRT or a CUDA device is missing."""
    skips = {}
    if any(item.get_closest_marker("requires_tensorrt") for item in items) \
            and not tensorrt_available():
        skips["requires_tensorrt"] = pytest.mark.skip(
            reason="TensorRT is not installed (it cannot be installed on these machines; "
                   "docs/design_brief.md §8)")
    if any(item.get_closest_marker("requires_cuda") for item in items) \
            and cuda_device_count() == 0:
        skips["requires_cuda"] = pytest.mark.skip(
            reason="no CUDA device (cuda-python is not installed or sees no GPU)")
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        for name, skip in skips.items():
            if item.get_closest_marker(name):
                item.add_marker(skip)


def assert_fast_graph_is_the_reference_step(config: STAEConfig, label: str = "") -> None:
    """float64, random state, batch 2: the time-stacked export module (``stae_deploy.export.time_stacked``)
    gives every output within 1e-12 of the reference step, in protocol shape."""
    from stae_deploy.export.time_stacked import TimeStackedSTAE

    reference = seeded_model(config).double()
    fast = TimeStackedSTAE(reference).double().eval()
    generator = torch.Generator().manual_seed(1)
    spec = reference.spec(batch=2)
    frame = torch.rand(2, 3, *config.frame_size, generator=generator, dtype=torch.float64)
    state = [torch.randn(p.input.concrete_shape(2), generator=generator, dtype=torch.float64)
             for p in spec.state]
    with torch.no_grad():
        expected, got = reference(frame, *state), fast(frame, *state)
    for tensor, want, have in zip(spec.outputs, expected, got, strict=True):
        assert have.shape == want.shape, f"{label}: '{tensor.name}' shape"
        error = float((have - want).abs().max())
        assert error <= 1e-12, f"{label}: '{tensor.name}' differs by {error:.3g}"


def assert_export_passes_and_runs(model: STAE, path: Path, frames: np.ndarray,
                                  steps: int = 50, horizon: int = 4) -> None:
    """``path`` (an export of ``model``) passes every check of ``stae check`` with ``steps``
    teacher-forced steps over ``frames`` (K, 3, H, W), its clip window exact, and the torch-free
    Predictor's first 4 predictions are within 1e-4 (relative) of the reference's."""
    from stae_deploy.verify.checks import check_artifact
    from stae_deploy.runtime.predictor import Predictor

    report = check_artifact(path, model, frames, steps=steps, horizon=horizon, progress=False)
    assert report.passed, ([c for c in report.checks if not c.passed], report.parity.failures)
    assert report.parity.max_abs["next_clip_window"] == 0.0
    predictor = Predictor.load(path)
    stream, state = predictor.new_stream(), model.zero_state()
    for step, frame in enumerate(frames[:4]):
        ours = predictor.step(stream, frame)
        with torch.no_grad():
            reference, state = model.step(torch.from_numpy(frame[None]), state)
        reference = reference[0].numpy()
        error = float(np.max(np.abs(ours - reference)))
        assert error <= 1e-4 * max(1.0, float(np.max(np.abs(reference)))), \
            f"runtime step {step + 1}: prediction off by {error:.3g}"
