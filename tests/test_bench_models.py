"""`stae bench --models`: the paper's Table 2 measured here, with the paper's ratios beside it."""
import json
import subprocess
import sys

import pytest
import torch

from stae_deploy.benchmarks.bench_models import (CHECKPOINTS_DIR, MODELS_DIR, PAPER_TABLE2,
                                                 available_models, comparison_markdown,
                                                 comparison_rows, held_out_quality,
                                                 paired_psnr_vs_stae, paper_config,
                                                 selected_models)
from stae_deploy.benchmarks import models_quality
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import space_to_depth

from conftest import seeded_model

TABLE2_MODELS = ("stae", "convlstm", "st_lstm", "causal_lstm", "e3d_lstm", "stae_standard_ed")
# Table 2's caption: "the size of the encoded features of STAE is 64 x 2 x 16 x 16 (channels,
# time, height, width) and 64 x 2 x 32 x 32 for others", at 512x512; §3: 4 layers, 64 channels.
PAPER_LATENT_512 = {"stae": (64, 2, 16, 16), "others": (64, 2, 32, 32)}
PAPER_LAYERS = 4


def paper_latent(name, size=512):
    """The caption's latent (C, T, h, w) of model ``name`` at ``size``x``size`` frames."""
    channels, time, height, width = PAPER_LATENT_512.get(name, PAPER_LATENT_512["others"])
    return channels, time, height * size // 512, width * size // 512


@pytest.fixture
def only_stae_and_convlstm_trained(tmp_path, monkeypatch):
    """A checkpoints folder holding the committed evaluations of STAE and ConvLSTM only, so what
    is said of untrained models does not hang on which models happen to be trained."""
    for folder in ("demo", "convlstm"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "eval.json").write_bytes(
            (CHECKPOINTS_DIR / folder / "eval.json").read_bytes())
    monkeypatch.setattr("stae_deploy.benchmarks.bench_models.CHECKPOINTS_DIR", tmp_path)


def test_every_model_of_the_comparison_has_a_config():
    assert set(TABLE2_MODELS) <= set(available_models())
    assert selected_models(["all"]) == available_models()


def test_an_unknown_model_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"--models: no config for \['predformer'\] .* known: "):
        selected_models(["stae", "predformer"])


def test_only_trained_models_bring_held_out_quality(only_stae_and_convlstm_trained):
    quality = held_out_quality("stae")
    assert quality["city"]["gain_db"] > 0 and set(quality) == {"city", "carphone", "motion"}
    assert quality["city"]["ssim_gain"] == pytest.approx(
        quality["city"]["model_ssim"] - quality["city"]["copy_last_ssim"])
    assert held_out_quality("e3d_lstm") is None


def test_ratios_are_to_convlstm_at_the_same_frame_size():
    def row(model, size, backend, ms, rss):
        return {"model": model, "frame_size": [size, size], "latent_shape": [8, 2, 4, 4],
                "backend": backend, "latency_ms_median": ms, "peak_rss_mb": rss,
                "gflop_per_step": 1.0}

    rows = [row("convlstm", 256, "pytorch eager", 10.0, 400.0),
            row("stae", 256, "pytorch eager", 15.0, 300.0),
            row("stae", 256, "onnxruntime fp32 fast", 9.0, 250.0),
            row("convlstm", 512, "pytorch eager", 40.0, 800.0),
            row("stae", 512, "pytorch eager", 50.0, 600.0)]
    table = {(e["model"], e["frame_size"][0]): e
             for e in comparison_rows(rows, {"stae": 2, "convlstm": 1}, {"stae": None})}
    assert table["stae", 256]["time_ratio"] == pytest.approx(1.5)
    assert table["stae", 256]["memory_ratio"] == pytest.approx(0.75)
    assert table["stae", 512]["time_ratio"] == pytest.approx(1.25)
    assert table["stae", 256]["ms_onnxruntime fp32 fast"] == 9.0
    assert table["stae", 256]["paper_memory_ratio"] == pytest.approx(2996 / 4579)
    assert table["stae", 256]["paper_time_ratio"] == pytest.approx(75 / 83)
    assert PAPER_TABLE2["e3d_lstm"] == (7843, 130)


@pytest.mark.integration   # times every trained model
def test_stae_bench_models_prints_table_2_for_this_machine(tmp_path, capsys):
    from stae_deploy.cli.main import main

    out = tmp_path / "table2.json"
    assert main(["bench", "--models", "stae", "convlstm", "--frame-sizes", "64", "--steps", "2",
                 "--warmup", "1", "--backends", "eager", "fast", "--no-memory",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [(e["model"], e["frame_size"]) for e in report["table2"]] == [("stae", [64, 64]),
                                                                          ("convlstm", [64, 64])]
    stae, convlstm = report["table2"]
    assert stae["params"] > 0 and stae["ms_pytorch eager"] > 0
    assert convlstm["time_ratio"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "| STAE | 64x64 |" in printed and "| ConvLSTM | 64x64 |" in printed
    assert "time / ConvLSTM (paper)" in printed
    assert "city +4.95 (+0.012)" in printed       # ConvLSTM's committed eval: PSNR dB (SSIM)


@pytest.mark.parametrize("name", TABLE2_MODELS)
def test_the_paper_configuration_builds_the_papers_depth_width_and_latent(name):
    config = paper_config(name)
    model = seeded_model(config)
    clip = torch.zeros(1, 3, config.clip_len, *config.frame_size)       # (B, 3, T, 512, 512)
    latent = model.output_encoder(space_to_depth(clip, config.patch))   # the encoder's output
    expected = paper_latent(name)
    assert config.frame_size == (512, 512) and tuple(latent.shape[1:]) == expected
    hidden = model.spec().tensor("hidden").shape                        # (B, N, C, T, h, w)
    assert tuple(hidden[1:]) == (PAPER_LAYERS, *expected)
    own = STAEConfig.load(MODELS_DIR / f"{name}.json").to_dict()
    changed = {"frame_size", "layers", "hidden", "patch", "stride2_stages"}
    assert {k: v for k, v in config.to_dict().items() if k not in changed} == \
        {k: v for k, v in own.items() if k not in changed}


@pytest.mark.integration   # steps six 4-layer models
def test_paper_config_benches_every_model_at_its_latent_with_random_weights(tmp_path, capsys,
                                                                            monkeypatch):
    from stae_deploy.cli.main import main

    monkeypatch.setattr("stae_deploy.benchmarks.bench.matmul_gflops",
                        lambda threads: {"numpy": 1.0, "best": 1.0})
    out = tmp_path / "table2.json"
    assert main(["bench", "--models", "all", "--paper-config", "--frame-sizes", "64",
                 "--steps", "1", "--warmup", "0", "--backends", "eager", "--no-memory",
                 "--work-dir", str(tmp_path / "work"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["paper_config"] is True
    rows = {entry["model"]: entry for entry in report["table2"]}
    assert list(rows) == available_models()
    for name, entry in rows.items():
        built = seeded_model(paper_config(name).with_frame_size(64))
        assert entry["latent_shape"] == list(built.spec().tensor("hidden").shape[2:]) \
            == list(paper_latent(name, 64))
        assert entry["params"] == sum(p.numel() for p in built.parameters())   # not the demo's
        assert entry["quality"] is None and entry["psnr_vs_stae"] is None
        assert entry["ms_pytorch eager"] > 0
        saved = STAEConfig.load(tmp_path / "work" / name / "paper_config.json")
        assert saved == paper_config(name)
    assert rows["convlstm"]["time_ratio"] == pytest.approx(1.0)
    printed = capsys.readouterr().out
    assert "Table 2 at the paper's configuration" in printed
    assert "| STAE | 64x64 | 64x2x2x2 |" in printed and "held-out gain" not in printed


def test_paper_config_needs_models(capsys):
    from stae_deploy.cli.main import main

    assert main(["bench", "--paper-config", "--frame-sizes", "64"]) == 2
    assert "--paper-config: it sets the configs of --models" in capsys.readouterr().err


def test_the_quality_column_gives_psnr_and_ssim_gain_per_clip_or_says_not_trained():
    entry = {"frame_size": [64, 64], "latent_shape": [8, 2, 8, 8], "params": 1e6,
             "gflop_per_step": 1.0, "memory_ratio": None,
             "paper_memory_ratio": None, "time_ratio": None, "paper_time_ratio": None}
    trained = {**entry, "model": "convlstm", "quality": {
        "city": {"gain_db": 4.946, "ssim_gain": 0.012},
        "motion": {"gain_db": -0.5}}}
    untrained = {**entry, "model": "st_lstm", "quality": None}
    paired = {"mean_db": 0.098, "ci95_db": [0.047, 0.151], "better": 64, "targets": 95}
    rows = comparison_markdown([{**trained, "psnr_vs_stae": paired}, untrained], [],
                               "header").splitlines()
    assert rows[4].endswith("| city +4.95 (+0.012), motion -0.50 | +0.10 [+0.05, +0.15], ahead "
                            "on 64/95 |")
    assert rows[5].endswith("| not trained |  |")


def _psnr_per_target(folder):
    per_clip = json.loads((CHECKPOINTS_DIR / folder / "eval.json").read_text())["per_clip"]
    return [psnr for clip in per_clip.values() for psnr in clip["model_psnr_db_per_step"]]


def test_convlstm_is_compared_with_stae_frame_by_frame_on_the_same_held_out_targets():
    paired = paired_psnr_vs_stae("convlstm")
    differences = [a - b for a, b in zip(_psnr_per_target("convlstm"), _psnr_per_target("demo"))]
    assert paired["targets"] == len(differences) == 95
    assert paired["mean_db"] == pytest.approx(sum(differences) / len(differences))
    assert paired["better"] == sum(d > 0 for d in differences)
    low, high = paired["ci95_db"]
    assert low < paired["mean_db"] < high and high - low < 1.0
    assert paired_psnr_vs_stae("stae") is None              # nothing to compare with itself


def test_an_untrained_model_has_nothing_to_compare_with_stae(only_stae_and_convlstm_trained):
    assert paired_psnr_vs_stae("e3d_lstm") is None
    assert paired_psnr_vs_stae("convlstm")["targets"] == 95


def test_evals_on_different_held_out_frames_are_refused(tmp_path, monkeypatch):
    for folder, targets in (("demo", 3), ("convlstm", 4)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "eval.json").write_text(json.dumps(
            {"per_clip": {"city": {"model_psnr_db_per_step": [30.0] * targets}}}))
    monkeypatch.setattr("stae_deploy.benchmarks.bench_models.CHECKPOINTS_DIR", tmp_path)
    with pytest.raises(ConfigError, match=r"eval.json of convlstm and of stae were measured on "
                                          r"different held-out frames \(\{'city': 4\} vs "):
        paired_psnr_vs_stae("convlstm")


@pytest.mark.integration   # runs the benchmark script
def test_models_quality_script_puts_the_committed_evals_side_by_side(tmp_path):
    script = [sys.executable, "-m", "stae_deploy.benchmarks.models_quality"]
    outputs = ["--json", str(tmp_path / "q.json"), "--markdown", str(tmp_path / "q.md"),
               "--plot", str(tmp_path / "q.png")]
    done = subprocess.run([*script, *outputs], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "q.json").read_text())
    convlstm = json.loads((CHECKPOINTS_DIR / "convlstm" / "eval.json").read_text())
    city = convlstm["per_clip"]["city"]
    assert rows["convlstm"]["per_clip"]["city"]["gain_db"] == city["gain_db"]
    assert rows["convlstm"]["per_clip"]["city"]["ssim_gain"] == pytest.approx(
        city["model_ssim"] - city["copy_last_ssim"])
    assert rows["convlstm"]["horizon_psnr_db"] == [h["model"] for h in convlstm["horizon_psnr_db"]]
    assert rows["convlstm"]["vs_stae"] == paired_psnr_vs_stae("convlstm")
    assert rows["stae"]["vs_stae"] is None
    assert "| ConvLSTM | +4.95 (+0.012) |" in (tmp_path / "q.md").read_text()
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = subprocess.run([*script, *outputs], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 2 and "models_quality: error: " in again.stderr
    assert "q.md already exists; pass --force" in again.stderr and "Traceback" not in again.stderr


def test_models_quality_lists_an_untrained_model_as_not_trained(only_stae_and_convlstm_trained):
    rows = {name: models_quality.model_quality(name) for name in available_models()}
    assert rows["e3d_lstm"] is None and rows["convlstm"]["vs_stae"]["targets"] == 95
    table = models_quality.quality_markdown(rows)
    assert "| E3D-LSTM | not trained |" in table and "| ConvLSTM | +4.95 (+0.012) |" in table


def test_models_quality_gives_the_first_and_last_100_steps_of_the_long_stream(
        only_stae_and_convlstm_trained):
    committed = json.loads((CHECKPOINTS_DIR / "convlstm" / "eval.json").read_text())["long_stream"]
    row = models_quality.model_quality("convlstm")
    assert row["long_stream"]["city"]["state_max_abs_per_window"] == \
        committed["city"]["state_max_abs_per_window"]
    summary = models_quality.long_stream_summary(row["long_stream"])
    clips = list(committed.values())
    assert summary["gain_last_db"] == pytest.approx(
        sum(c["gain_db_per_window"][-1] for c in clips) / len(clips))
    assert summary["state_last"] == max(c["state_max_abs_per_window"][-1] for c in clips)
    assert committed["city"]["steps"] == 1000
    table = models_quality.quality_markdown({"convlstm": row})
    assert "| 1000-step stream: gain dB, first -> last 100 steps |" in table
    assert f"| {summary['gain_first_db']:+.2f} -> {summary['gain_last_db']:+.2f} | " \
           f"{summary['state_first']:.3g} -> {summary['state_last']:.3g} |" in table


def test_an_eval_without_a_long_stream_says_not_measured(only_stae_and_convlstm_trained):
    from stae_deploy.benchmarks import bench_models

    path = bench_models.CHECKPOINTS_DIR / "convlstm" / "eval.json"
    report = json.loads(path.read_text())
    del report["long_stream"]
    path.write_text(json.dumps(report))
    rows = {"stae": models_quality.model_quality("stae"),
            "convlstm": models_quality.model_quality("convlstm")}
    assert rows["convlstm"]["long_stream"] is None
    assert "| not measured |  |" in models_quality.quality_markdown(rows).splitlines()[3]
