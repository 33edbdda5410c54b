"""``stae bench --models all``: the paper's Table 2 (memory and time of STAE and the recurrent
models it was compared with) measured on this machine, next to the paper's own ratios.

The models are the config files in ``stae_ref/models/`` (one per model, named by file stem); a
model whose trained checkpoint exists (``stae_ref/checkpoints/<name>/checkpoint.json``, the STAE
demo for ``stae``) runs with its weights and brings the held-out quality of its ``eval.json``;
the others run with seeded random weights (speed and memory do not depend on the weights) and
show no quality. Every model runs every backend of the bench at every frame size
(``stae_deploy.benchmarks.bench.bench_frame_size``); the comparison rows then put, per model and frame size:
parameters, GFLOP per step, peak RSS and step latency of each backend, the memory and time
ratios to ConvLSTM measured here, and the paper's (Table 2: GPU memory at batch 1 and inference
time for 40 samples at 512², UCF Sport).

With ``paper_config`` (``stae bench --models ... --paper-config``) every model runs instead at
the paper's depth, width and latent size (:func:`paper_config`), with seeded random weights and
no quality columns.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from stae_deploy import stae_ref
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model_source import ModelSource
from stae_deploy.benchmarks.bench_backends import BACKENDS, EAGER
from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.metrics import bootstrap_mean_interval

MODELS_DIR = Path(stae_ref.__file__).resolve().parent / "models"
CHECKPOINTS_DIR = Path(stae_ref.__file__).resolve().parent / "checkpoints"
CHECKPOINT_FOLDERS = {"stae": "demo"}        # model name -> its checkpoint folder, where not equal
BASELINE = "convlstm"                         # the ratios' denominator, as in the paper's ordering
PAPER_STAE = "stae"                           # the one model on STAE's latent in paper_config

# The paper's Table 2 (512², batch 1): GPU memory (MB) and inference time for 40 samples (s).
# Its comparison models ran on a 64x2x32x32 latent, STAE on 64x2x16x16; the demo configs of
# stae_ref/models/ share STAE's stem, so the latent is the same for all (paper_config: the
# paper's latents).
PAPER_TABLE2: dict[str, tuple[float, float]] = {
    "convlstm": (4579, 83), "st_lstm": (6237, 94), "causal_lstm": (7123, 101),
    "e3d_lstm": (7843, 130), "stae": (2996, 75)}
PAPER_NAMES = {"convlstm": "ConvLSTM", "st_lstm": "PredRNN (ST-LSTM)",
               "causal_lstm": "PredRNN++ (Causal LSTM + GHU)", "e3d_lstm": "E3D-LSTM",
               "stae": "STAE", "stae_standard_ed": "STAE, one encoder/decoder (ablation)"}


def available_models() -> list[str]:
    """Names of the model configs in ``stae_ref/models/`` (file stems): the paper's Table 2 order
    (:data:`PAPER_NAMES`), then any others alphabetically."""
    order = list(PAPER_NAMES)
    return sorted((path.stem for path in MODELS_DIR.glob("*.json")),
                  key=lambda name: (order.index(name) if name in order else len(order), name))


def selected_models(requested: Sequence[str]) -> list[str]:
    """``requested`` names (or "all"), checked against the configs; ConfigError names the rest."""
    known = available_models()
    names = known if list(requested) == ["all"] else list(dict.fromkeys(requested))
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"--models: no config for {unknown} in {MODELS_DIR}; known: "
                          f"{known} (or 'all')")
    return names


def model_source(name: str, seed: int) -> ModelSource:
    """Where model ``name``'s weights come from: its trained checkpoint if committed, else its
    config with seeded random weights."""
    record = checkpoint_folder(name) / "checkpoint.json"
    if record.is_file():
        checkpoint = checkpoint_folder(name) / json.loads(record.read_text())["file"]
        return ModelSource(checkpoint=str(checkpoint), seed=seed)
    return ModelSource(config=str(MODELS_DIR / f"{name}.json"), seed=seed)


def paper_config(name: str) -> STAEConfig:
    """Model ``name``'s config at the paper's Table 2 configuration, derived from its file in
    ``stae_ref/models/``: only depth, width, downsampling and frame size change.

    Depth and width are STAEConfig's defaults, the paper's STAE (4 layers of 64 channels), for
    every model. STAE (:data:`PAPER_STAE`) also takes the defaults' patch-8 stem and 2 stride-2
    stages (total stride 32: a 64x2x16x16 latent at 512x512); every other model the same stem and
    one stride-2 stage fewer (total stride 16: 64x2x32x32 at 512x512, the caption's "for
    others"). frame_size: the defaults' 512x512. Kept from the file: cell, head, tau, kernel,
    clip_len, decoder_skip, encoder_decoder.

    Left unspecified by the paper, and chosen here: the comparison models' depth and width (it
    gives only their latent; here STAE's, so the latent grid is the one difference), how their
    latent is reached (it never describes their encoders; here STAE's patch-8 space-to-depth
    stem with one learned stride-2 stage instead of two, rather than patch 4 and two stages:
    STAE's second stride-2 stage is then the one difference in the encoders, and a larger
    space-to-depth step is the closer of the two to the original ConvLSTM/PredRNN/E3D-LSTM
    code, which reaches its grid by space-to-depth patches alone), their kernel (the files'
    3x3x3 for every model, STAE included, although the paper's STAE used 3x5x5) and the
    ablation's latent (``stae_standard_ed`` replaces STAE's encoders with standard ones, so it
    gets the comparison models' 32x32 grid).
    """
    own = STAEConfig.load(MODELS_DIR / f"{name}.json")
    paper = STAEConfig()
    stages = paper.stride2_stages if name == PAPER_STAE else paper.stride2_stages - 1
    return replace(own, frame_size=paper.frame_size, layers=paper.layers, hidden=paper.hidden,
                   patch=paper.patch, stride2_stages=stages)


def paper_config_source(name: str, seed: int, folder: Path, force: bool) -> ModelSource:
    """Seeded random weights of :func:`paper_config` ``(name)``, whose JSON is written to
    ``folder``/paper_config.json (kept with that model's bench artifacts; an existing file is
    refused unless ``force``)."""
    path = refuse_overwrite(folder / "paper_config.json", force)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(path, paper_config(name).to_json() + "\n")
    return ModelSource(config=str(path), seed=seed)


def checkpoint_folder(name: str) -> Path:
    return CHECKPOINTS_DIR / CHECKPOINT_FOLDERS.get(name, name)


def committed_eval(name: str) -> dict[str, Any] | None:
    """Model ``name``'s committed ``stae eval --json`` report (``eval.json`` in its checkpoint
    folder); None if it is not trained."""
    path = checkpoint_folder(name) / "eval.json"
    return json.loads(path.read_text()) if path.is_file() else None


def held_out_quality(name: str) -> dict[str, Any] | None:
    """Per clip {model_psnr_db, copy_last_psnr_db, gain_db, model_ssim, copy_last_ssim,
    ssim_gain} from the model's committed ``eval.json`` (teacher-forced, held-out frames; the
    SSIM fields where it has them); None if not trained."""
    report = committed_eval(name)
    if report is None:
        return None
    keys = ("model_psnr_db", "copy_last_psnr_db", "gain_db", "model_ssim", "copy_last_ssim")
    quality = {clip: {key: values[key] for key in keys if key in values}
               for clip, values in report["per_clip"].items()}
    for values in quality.values():
        if "model_ssim" in values and "copy_last_ssim" in values:
            values["ssim_gain"] = values["model_ssim"] - values["copy_last_ssim"]
    return quality


def paired_psnr_vs_stae(name: str, resamples: int = 10_000, seed: int = 0
                        ) -> dict[str, Any] | None:
    """Model ``name``'s held-out PSNR minus STAE's, target by target (teacher-forced, the same
    frames of every clip, from both committed ``eval.json`` files); None unless both are trained.

    Returns mean_db (over all targets), ci95_db (a percentile bootstrap over targets,
    ``resamples`` draws, seeded), better (targets where ``name`` scores higher), targets, and
    per_clip_mean_db. The targets are consecutive frames of three clips, not independent draws,
    and one training seed per model: the interval says how the difference spreads over these
    frames, not how it would move with another training run. None for ``stae`` itself.
    """
    if name == "stae":
        return None
    mine, stae = (_per_target_psnr(model) for model in (name, "stae"))
    if mine is None or stae is None:
        return None
    if mine.keys() != stae.keys() or any(len(mine[c]) != len(stae[c]) for c in mine):
        raise ConfigError(f"eval.json of {name} and of stae were measured on different held-out "
                          f"frames ({_target_counts(mine)} vs {_target_counts(stae)}); "
                          f"re-run stae eval on both")
    differences = {clip: np.subtract(mine[clip], stae[clip]) for clip in mine}
    pooled = np.concatenate(list(differences.values()))
    low, high = bootstrap_mean_interval(pooled, resamples, seed)
    return {"mean_db": float(pooled.mean()), "ci95_db": [low, high],
            "better": int((pooled > 0).sum()), "targets": int(pooled.size),
            "per_clip_mean_db": {clip: float(d.mean()) for clip, d in differences.items()}}


def _per_target_psnr(name: str) -> dict[str, list[float]] | None:
    report = committed_eval(name)
    return None if report is None else {
        clip: values["model_psnr_db_per_step"] for clip, values in report["per_clip"].items()}


def _target_counts(per_clip: Mapping[str, list[float]]) -> dict[str, int]:
    return {clip: len(values) for clip, values in per_clip.items()}


def comparison_rows(rows: Sequence[Mapping[str, Any]], params: Mapping[str, int],
                    quality: Mapping[str, Any], paired: Mapping[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
    """One row per (model, frame size) from the bench's per-backend ``rows``.

    Fields: model, frame_size, latent_shape (C, T, h, w), params, gflop_per_step, ms_<backend>
    and rss_mb_<backend> of every backend, memory_ratio / time_ratio (PyTorch eager peak RSS
    and median step time over ConvLSTM's at the same size), paper_memory_ratio /
    paper_time_ratio (Table 2), quality, psnr_vs_stae (``paired``: :func:`paired_psnr_vs_stae`
    per model).
    """
    paired = paired or {}
    table: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    for row in rows:
        key = (row["model"], tuple(row["frame_size"]))
        entry = table.setdefault(key, {"model": row["model"], "frame_size": list(key[1]),
                                       "latent_shape": row["latent_shape"],
                                       "params": params[row["model"]], "gflop_per_step": None,
                                       "quality": quality.get(row["model"]),
                                       "psnr_vs_stae": paired.get(row["model"])})
        backend = row["backend"]
        entry[f"ms_{backend}"] = row["latency_ms_median"]
        entry[f"rss_mb_{backend}"] = row["peak_rss_mb"]
        entry["gflop_per_step"] = entry["gflop_per_step"] or row["gflop_per_step"]
    eager = BACKENDS[EAGER].label
    for (model, size), entry in table.items():
        base = table.get((BASELINE, size))
        entry["memory_ratio"] = _ratio(entry.get(f"rss_mb_{eager}"),
                                       base and base.get(f"rss_mb_{eager}"))
        entry["time_ratio"] = _ratio(entry.get(f"ms_{eager}"), base and base.get(f"ms_{eager}"))
        paper, paper_base = PAPER_TABLE2.get(model), PAPER_TABLE2[BASELINE]
        entry["paper_memory_ratio"] = paper[0] / paper_base[0] if paper else None
        entry["paper_time_ratio"] = paper[1] / paper_base[1] if paper else None
    return list(table.values())


def comparison_markdown(table: Sequence[Mapping[str, Any]], backends: Sequence[str],
                        header: str, paper_config: bool = False) -> str:
    """Table 2 for this machine as markdown: a header line, one row per (model, frame size).

    paper_config: the models ran at :func:`paper_config` with random weights; no quality
    columns, and the note says so.
    """
    columns = ["model", "frame", "latent CxTxhxw", "params (M)", "GFLOP/step",
               *(f"{b} ms" for b in backends), *(f"{b} peak MB" for b in backends),
               "memory / ConvLSTM (here)", "memory / ConvLSTM (paper)",
               "time / ConvLSTM (here)", "time / ConvLSTM (paper)",
               *(() if paper_config else ("held-out gain: PSNR dB (SSIM)",
                                          "PSNR vs STAE, paired: dB [95% CI]"))]
    lines = [header, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for entry in table:
        cells = [PAPER_NAMES.get(entry["model"], entry["model"]),
                 "x".join(map(str, entry["frame_size"])),
                 "x".join(map(str, entry["latent_shape"])), f"{entry['params'] / 1e6:.2f}",
                 _fmt(entry["gflop_per_step"], "{:.2f}"),
                 *(_fmt(entry.get(f"ms_{b}"), "{:.1f}") for b in backends),
                 *(_fmt(entry.get(f"rss_mb_{b}"), "{:.0f}") for b in backends),
                 _fmt(entry["memory_ratio"], "{:.2f}"), _fmt(entry["paper_memory_ratio"], "{:.2f}"),
                 _fmt(entry["time_ratio"], "{:.2f}"), _fmt(entry["paper_time_ratio"], "{:.2f}")]
        if not paper_config:
            quality = entry["quality"]
            cells += [", ".join(_clip_gain(clip, values) for clip, values in quality.items())
                      if quality else "not trained", _paired_cell(entry.get("psnr_vs_stae"))]
        lines.append("| " + " | ".join(cells) + " |")
    measured = ("Memory: peak RSS of a fresh process stepping the model (PyTorch eager for the "
                "ratios); time: median step; both ratios are to ConvLSTM at the same frame "
                "size. Paper: Table 2 (UCF Sport 512², GPU memory at batch 1, inference time "
                "for 40 samples; its comparison models ran on a 2x larger latent than STAE")
    if paper_config:
        lines += ["", measured + ", as here). Every model at the paper's depth and width (4 "
                  "layers, 64 channels), seeded random weights; the configs and what the paper "
                  "leaves open: stae_deploy.benchmarks.bench_models.paper_config."]
    else:
        lines += ["", measured + "; here all share STAE's stem). Gain: teacher-forced held-out "
                  "PSNR (SSIM) over copy-last-frame, per clip, from the model's committed "
                  "eval.json. PSNR vs STAE: the same held-out frames, model minus STAE, mean "
                  "over all frames with a bootstrap interval over frames (one training run per "
                  "model), and on how many frames the model is ahead."]
    return "\n".join(lines) + "\n"


def _paired_cell(paired: Mapping[str, Any] | None) -> str:
    """"+0.07 [+0.01, +0.13], ahead on 60/95"; empty when either model is untrained."""
    if not paired:
        return ""
    low, high = paired["ci95_db"]
    return (f"{paired['mean_db']:+.2f} [{low:+.2f}, {high:+.2f}], ahead on "
            f"{paired['better']}/{paired['targets']}")


def _clip_gain(clip: str, values: Mapping[str, Any]) -> str:
    """One clip's held-out gain over copy-last, "city +4.95 (+0.012)": PSNR dB (SSIM); the SSIM
    part only where the clip's eval.json has it."""
    text = f"{clip} {values['gain_db']:+.2f}"
    return text + f" ({values['ssim_gain']:+.3f})" if "ssim_gain" in values else text


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def _fmt(value: float | None, form: str) -> str:
    return "" if value is None else form.format(value)
