"""`stae bench`: every backend timed interleaved on one tiny model, with the matmul peak, peak RSS
per backend in its own process, op time shares and the three report files; a backend that
cannot be built is a row with its reason; existing outputs and bad options are refused."""
import json

import pytest

from stae_deploy.benchmarks.bench_backends import BACKENDS
from stae_deploy.benchmarks.bench_report import markdown_table
from stae_deploy.benchmarks.bench_subprocess import run_module_json
from stae_deploy.cli.main import main
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model_cost import gflop_per_step

from conftest import seeded_model

pytestmark = pytest.mark.network

TINY_CONFIG = STAEConfig(frame_size=(64, 64), patch=4, stride2_stages=1, hidden=8, layers=2, tau=3,
                         kernel=(3, 3, 3))
REQUIRED_FIELDS = ("model", "frame_size", "batch", "backend", "latency_ms_median",
                   "latency_ms_p90", "peak_rss_mb", "gflop_per_step", "gflops_achieved",
                   "fraction_of_matmul_peak", "ratio_to_pytorch_eager", "state_mb", "weight_mb")


@pytest.fixture(scope="module")
def tiny_config_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(TINY_CONFIG.to_json())
    return path


@pytest.fixture(scope="module")
def bench_run(tiny_config_path, tmp_path_factory):
    """One full bench of the tiny model at 64x64, 1 warm-up + 2 steps, profiled: (argv, outputs
    by option, the JSON report, the work folder)."""
    folder = tmp_path_factory.mktemp("bench")
    outputs = {"json": folder / "bench.json", "markdown": folder / "bench.md",
               "plot": folder / "bench.png"}
    argv = ["bench", "--config", str(tiny_config_path), "--frame-sizes", "64", "--steps", "2",
            "--warmup", "1", "--profile", "--work-dir", str(folder / "work"),
            *(arg for option, path in outputs.items() for arg in (f"--{option}", str(path)))]
    assert main(argv) == 0
    return argv, outputs, json.loads(outputs["json"].read_text()), folder / "work"


def test_every_backend_gets_a_timed_row_with_every_field(bench_run):
    _, _, report, _ = bench_run
    rows = {row["backend"]: row for row in report["rows"]}
    assert list(rows) == [kind.label for kind in BACKENDS.values()]
    gflop = gflop_per_step(seeded_model(TINY_CONFIG), (64, 64))
    for label, row in rows.items():
        assert all(row[field] is not None for field in REQUIRED_FIELDS), label
        assert row["error"] is None, label
        assert row["model"] == "tiny.json, seed 0" and row["frame_size"] == [64, 64], label
        assert 0 < row["latency_ms_median"] <= row["latency_ms_p90"], label
        assert row["gflop_per_step"] == gflop, label
        assert row["gflops_achieved"] == pytest.approx(gflop / (row["latency_ms_median"] / 1e3))
        assert row["peak_rss_mb"] > 0 and row["state_mb"] > 0 and row["weight_mb"] > 0, label
    assert rows["pytorch eager"]["ratio_to_pytorch_eager"] == 1.0
    assert "not an FP16 speed" in rows["onnxruntime fp16 graph (fp32 compute on CPU)"]["note"]
    state_bytes = sum(a.nbytes for a in seeded_model(TINY_CONFIG).spec().zero_state().values())
    assert {row["state_mb"] for row in rows.values()} == {state_bytes / 2 ** 20}


def test_the_report_carries_the_matmul_peak_threads_and_machine(bench_run):
    _, _, report, _ = bench_run
    matmul = report["matmul_gflops"]
    assert set(matmul) == {"numpy", "torch", "onnxruntime", "best"}
    assert matmul["best"] == max(matmul[name] for name in ("numpy", "torch", "onnxruntime")) > 0
    assert report["threads"] >= 1 and report["machine"]["cpu_count"] >= 1
    for row in report["rows"]:
        assert row["fraction_of_matmul_peak"] == pytest.approx(row["gflops_achieved"]
                                                               / matmul["best"])


def test_profile_gives_each_onnxruntime_row_its_kernel_time_per_op_type(bench_run):
    _, _, report, _ = bench_run
    for row in report["rows"]:
        if row["backend"] == "pytorch eager":
            assert "op_time_share" not in row
            continue
        shares = row["op_time_share"]
        assert sum(shares.values()) == pytest.approx(1.0), row["backend"]
        assert list(shares.values()) == sorted(shares.values(), reverse=True)
    int8 = next(row for row in report["rows"] if "int8" in row["backend"])
    assert "QLinearConv" in int8["op_time_share"] or "ConvInteger" in int8["op_time_share"]


def test_markdown_and_png_are_written(bench_run):
    _, outputs, report, _ = bench_run
    table = outputs["markdown"].read_text()
    assert table == markdown_table(report)
    for kind in BACKENDS.values():
        assert f"| {kind.label}" in table
    assert outputs["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(outputs["json"].parent.glob("*.partial"))


def test_an_onnxruntime_backend_is_measured_in_a_process_without_torch(bench_run):
    work = bench_run[3]
    answer = run_module_json("stae_deploy.benchmarks.bench_memory", [
        "fast", str(work / "64x64" / "stae.fast.onnx"), "--frame-size", "64", "64",
        "--threads", "1", "--steps", "1"])
    assert answer["torch_loaded"] is False and answer["peak_rss_kib"] > 0


def test_existing_outputs_and_artifacts_are_refused_without_force(bench_run, tiny_config_path,
                                                                  capsys, monkeypatch):
    argv, outputs, _, work = bench_run
    before = outputs["json"].read_bytes()
    assert main(argv) == 2
    assert f"{outputs['json']} already exists; pass --force" in capsys.readouterr().err
    assert outputs["json"].read_bytes() == before
    monkeypatch.setattr("stae_deploy.benchmarks.bench.matmul_gflops", lambda threads: {"numpy": 1.0, "best": 1.0})
    assert main(["bench", "--config", str(tiny_config_path), "--frame-sizes", "64",
                 "--no-memory", "--work-dir", str(work)]) == 2
    assert f"{work / '64x64' / 'model.pt'} already exists; pass --force" in capsys.readouterr().err


def test_a_backend_that_cannot_be_built_is_reported_with_its_reason(tiny_config_path, monkeypatch,
                                                                    capsys):
    def no_exporter(*args, **kwargs):
        raise ImportError("No module named 'onnxscript'")

    monkeypatch.setattr("stae_deploy.benchmarks.bench_artifacts.export_onnx", no_exporter)
    monkeypatch.setattr("stae_deploy.benchmarks.bench.matmul_gflops", lambda threads: {"numpy": 1.0, "best": 1.0})
    argv = ["bench", "--config", str(tiny_config_path), "--frame-sizes", "64", "--steps", "1",
            "--warmup", "0", "--backends", "eager", "fp16", "--no-memory", "--json", "-"]
    assert main(argv) == 0
    rows = {row["backend"]: row for row in json.loads(capsys.readouterr().out)["rows"]}
    fp16 = rows["onnxruntime fp16 graph (fp32 compute on CPU)"]
    assert "needs the fast graph" in fp16["error"] and "onnxscript" in fp16["error"]
    assert fp16["latency_ms_median"] is None
    assert rows["pytorch eager"]["latency_ms_median"] > 0
    assert rows["pytorch eager"]["peak_rss_mb"] is None


@pytest.mark.parametrize("options, message", [
    (["--frame-sizes", "100"], "--frame-sizes 100x100: frame_size height"),
    (["--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["--frame-size", "64"], "--frame-size: the bench runs at each of --frame-sizes"),
])
def test_bad_options_are_named(tiny_config_path, capsys, options, message):
    assert main(["bench", "--config", str(tiny_config_path), *options]) == 2
    assert message in capsys.readouterr().err
