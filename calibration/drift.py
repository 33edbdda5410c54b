"""``stae drift``: does quantisation error build up in the recurrent state, step after step?

    stae drift MODEL.onnx MODEL.int8.onnx [MODEL.fp16.onnx] --steps 1000 [--json] [--plot drift.png]

Every variant runs teacher-forced over the same held-out footage as the FP32 model (each clip's
held-out frames played forward then backward, so a short clip gives a long run). Per step:

    psnr_vs_fp32      prediction PSNR vs the FP32 model's prediction
    psnr_vs_truth     prediction PSNR vs the frame that came
    state_rel_error   ||s_q - s_fp32|| / ||s_fp32|| over all state tensors
    err_over_delta    ||v_q - v_fp32|| / ||v_fp32 - v_t||: the error relative to the change the
                      model predicts (PSNR vs FP32 flatters a residual model, whose output is mostly
                      the copied frame)
    control           the variant stepped from the FP32 model's state: its per-step error with no
                      build-up. ``buildup`` = free-running PSNR vs FP32 minus the control's (the
                      negative of the build-up penalty, control minus free): 0 when nothing
                      accumulates, falling when error compounds.

Summary per variant: means, ``truth_gap_db`` (FP32's PSNR vs truth minus the variant's),
``buildup_slope_db_per_100_steps``: the least-squares slope of ``buildup`` over the last 60 % of
steps (negative means the free run falls further behind its own per-step error: compounding),
and ``buildup_penalty_db_per_100_steps``: the mean penalty (control minus free) per 100-step
window, which shows whether a build-up keeps growing or settles.
Predictions are clipped to [0, 1] (the frames a user sees); PSNRs are capped at 120 dB (identical
outputs). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from stae_deploy.runtime.errors import ConfigError, SpecMismatchError
from stae_deploy.runtime.metrics import linear_slope, psnr_db
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.stae_ref.footage import CORE_CLIPS, clip_names, forward_backward
from stae_deploy.stae_ref.training_data import DEFAULT_HOLDOUT_FRACTION, split_clips

PSNR_CAP_DB = 120.0
SLOPE_TAIL_FRACTION = 0.6
PER_STEP_METRICS = ("psnr_vs_fp32", "psnr_vs_truth", "state_rel_error", "err_over_delta",
                    "control_psnr_vs_fp32", "buildup")


@dataclass(frozen=True)
class DriftSettings:
    """How long and on what ``stae drift`` runs: ``steps`` teacher-forced steps (>= 2) per clip
    of ``clips`` (each clip's held-out frames played forward then backward); ``threads``:
    onnxruntime intra-op threads (None: its default)."""

    steps: int = 1000
    clips: tuple[str, ...] = CORE_CLIPS
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ConfigError(f"steps: need at least 2, got {self.steps}")
        object.__setattr__(self, "clips", clip_names(self.clips))
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads: expected >= 1 or None, got {self.threads}")


@dataclass
class VariantTrace:
    """Per-step metrics of one variant on one stream (see the module docstring)."""

    metrics: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in PER_STEP_METRICS})


def capped_psnr_db(predicted: np.ndarray, target: np.ndarray) -> float:
    return min(psnr_db(predicted, target), PSNR_CAP_DB)


def held_out_streams(frame_size: tuple[int, int], clips: tuple[str, ...], steps: int,
                     holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION) -> dict[str, np.ndarray]:
    """Clip name -> (steps + 1, 3, H, W): its held-out frames played forward then backward."""
    return {split.name: forward_backward(split.frames[split.holdout_start:], steps + 1)
            for split in split_clips(clips, frame_size, holdout_fraction)}


def drift_rollout(fp32: OnnxStepper, variants: dict[str, OnnxStepper], frames: np.ndarray,
                  progress: tqdm | None = None) -> tuple[dict[str, list[float]],
                                                         dict[str, VariantTrace]]:
    """Teacher-force ``frames`` (S + 1, 3, H, W) through every model for S steps.

    Returns (FP32's per-step ``psnr_vs_truth`` and ``copy_last_psnr``, variant name -> trace).
    """
    fp32_trace: dict[str, list[float]] = {"psnr_vs_truth": [], "copy_last_psnr": []}
    traces = {name: VariantTrace() for name in variants}
    fp32_state = fp32.zero_state(1)
    states = {name: stepper.zero_state(1) for name, stepper in variants.items()}
    for t in range(len(frames) - 1):
        frame, truth = frames[t][None], frames[t + 1][None]
        prediction, next_fp32_state, _ = fp32.step(frame, fp32_state)
        prediction = np.clip(prediction, 0.0, 1.0)
        fp32_trace["psnr_vs_truth"].append(capped_psnr_db(prediction, truth))
        fp32_trace["copy_last_psnr"].append(capped_psnr_db(frame, truth))
        change = float(np.linalg.norm(prediction - frame))
        state_norm = np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64)))
                                 for v in next_fp32_state.values()))
        for name, stepper in variants.items():
            free, states[name], _ = stepper.step(frame, states[name])
            control, _, _ = stepper.step(frame, fp32_state)
            free, control = np.clip(free, 0.0, 1.0), np.clip(control, 0.0, 1.0)
            state_error = np.sqrt(sum(
                float(np.sum(np.square(states[name][k].astype(np.float64) - v)))
                for k, v in next_fp32_state.items()))
            m = traces[name].metrics
            m["psnr_vs_fp32"].append(capped_psnr_db(free, prediction))
            m["psnr_vs_truth"].append(capped_psnr_db(free, truth))
            m["state_rel_error"].append(state_error / max(state_norm, 1e-12))
            m["err_over_delta"].append(float(np.linalg.norm(free - prediction)) / max(change, 1e-12))
            m["control_psnr_vs_fp32"].append(capped_psnr_db(control, prediction))
            m["buildup"].append(m["psnr_vs_fp32"][-1] - m["control_psnr_vs_fp32"][-1])
        fp32_state = next_fp32_state
        if progress is not None:
            progress.update(1)
    return fp32_trace, traces


def slope_per_100_steps(values: list[float], tail_fraction: float = SLOPE_TAIL_FRACTION) -> float:
    """Least-squares slope of the last ``tail_fraction`` of ``values``, in units per 100 steps."""
    return linear_slope(values[int(len(values) * (1 - tail_fraction)):]) * 100


def summarize(fp32_trace: dict[str, list[float]], trace: VariantTrace) -> dict[str, float]:
    """The per-variant summary of one stream (keys as in the module docstring)."""
    m = trace.metrics
    return {
        "psnr_vs_fp32_db_mean": float(np.mean(m["psnr_vs_fp32"])),
        "psnr_vs_fp32_db_min": float(np.min(m["psnr_vs_fp32"])),
        "err_over_delta_mean": float(np.mean(m["err_over_delta"])),
        "psnr_vs_truth_db_mean": float(np.mean(m["psnr_vs_truth"])),
        "truth_gap_db": float(np.mean(fp32_trace["psnr_vs_truth"]) - np.mean(m["psnr_vs_truth"])),
        "state_rel_error_mean": float(np.mean(m["state_rel_error"])),
        "state_rel_error_end": float(m["state_rel_error"][-1]),
        "control_psnr_vs_fp32_db_mean": float(np.mean(m["control_psnr_vs_fp32"])),
        "buildup_penalty_db_mean": -float(np.mean(m["buildup"])),
        "buildup_slope_db_per_100_steps": slope_per_100_steps(m["buildup"]),
        "buildup_penalty_db_per_100_steps": [-float(np.mean(m["buildup"][start:start + 100]))
                                             for start in range(0, len(m["buildup"]), 100)],
    }


def measure_drift(fp32_path: str | Path, variant_paths: dict[str, str | Path],
                  streams: dict[str, np.ndarray], progress: bool = True,
                  threads: int | None = None) -> dict[str, Any]:
    """Drift of each variant against the FP32 model over each stream.

    Returns ``{"fp32": {...}, "<variant>": {summary averaged over streams}, "per_stream":
    {stream: {"fp32": ..., variant: summary}}, "traces": {stream: {variant: per-step}}}``.
    """
    if "fp32" in variant_paths:
        raise ConfigError("variants: 'fp32' names the reference run; name the variant otherwise")
    fp32 = OnnxStepper(fp32_path, threads=threads)
    if fp32.metadata.precision != "fp32":
        raise ConfigError(f"{fp32_path}: the first model must be the fp32 export, got "
                          f"{fp32.metadata.precision}")
    variants = {}
    for name, path in variant_paths.items():
        variants[name] = OnnxStepper(path, threads=threads)
        if variants[name].spec.inputs != fp32.spec.inputs:
            raise SpecMismatchError(f"{path}: its inputs differ from {fp32_path}'s; a variant "
                                    f"must come from the same export")
    bar = tqdm(total=sum(len(f) - 1 for f in streams.values()), desc="drift", unit="step",
               disable=not progress)
    report: dict[str, Any] = {"per_stream": {}, "traces": {}}
    for stream, frames in streams.items():
        fp32_trace, traces = drift_rollout(fp32, variants, frames, bar)
        report["per_stream"][stream] = {
            "steps": len(frames) - 1,
            "fp32": {"psnr_vs_truth_db_mean": float(np.mean(fp32_trace["psnr_vs_truth"])),
                     "copy_last_psnr_db_mean": float(np.mean(fp32_trace["copy_last_psnr"]))},
            **{name: summarize(fp32_trace, trace) for name, trace in traces.items()}}
        report["traces"][stream] = {"fp32": fp32_trace,
                                    **{name: t.metrics for name, t in traces.items()}}
    bar.close()
    per_stream = list(report["per_stream"].values())
    for name in ("fp32", *variants):
        report[name] = {key: mean_over_streams([s[name][key] for s in per_stream])
                        for key in per_stream[0][name]}
    if variants:
        report["worst"] = {name: worst_case(per_stream, name) for name in variants}
    return report


def mean_over_streams(values: list[Any]) -> float | list[float]:
    """The mean of one figure over streams: a number, or a per-window list (element-wise, over
    the windows every stream has)."""
    if isinstance(values[0], list):
        windows = min(map(len, values))
        return np.mean([v[:windows] for v in values], axis=0).tolist()
    return float(np.mean(values))


def worst_case(per_stream: list[dict[str, Any]], name: str) -> dict[str, float]:
    """The worst stream's value of each bounded figure of variant ``name``."""
    rows = [s[name] for s in per_stream]
    return {"psnr_vs_fp32_db_mean": min(r["psnr_vs_fp32_db_mean"] for r in rows),
            "err_over_delta_mean": max(r["err_over_delta_mean"] for r in rows),
            "truth_gap_db": max(r["truth_gap_db"] for r in rows),
            "buildup_slope_db_per_100_steps": min(r["buildup_slope_db_per_100_steps"] for r in rows)}


def save_drift_plot(path: str | Path, report: dict[str, Any]) -> Path:
    """Four panels over the streams laid end to end: PSNR vs FP32 (free and control), error over
    predicted change, state relative error, PSNR vs truth."""
    from stae_deploy.runtime.plots import save_panel_plot

    traces = list(report["traces"].values())
    variants = [k for k in traces[0] if k != "fp32"]

    def joined(variant: str, metric: str) -> list[float]:
        return [v for stream in traces for v in stream[variant][metric]]

    panels = {
        "prediction PSNR vs FP32 (free run; control = from the FP32 state)": ("dB", {
            **{f"{v}": joined(v, "psnr_vs_fp32") for v in variants},
            **{f"{v} control": joined(v, "control_psnr_vs_fp32") for v in variants}}),
        "error / FP32's predicted change": ("ratio", {v: joined(v, "err_over_delta")
                                                      for v in variants}),
        "state relative error": ("ratio", {v: joined(v, "state_rel_error") for v in variants}),
        "prediction PSNR vs the next frame": ("dB", {
            "fp32": joined("fp32", "psnr_vs_truth"), "copy last": joined("fp32", "copy_last_psnr"),
            **{v: joined(v, "psnr_vs_truth") for v in variants}}),
    }
    streams = ", ".join(f"{name} ({len(t['fp32']['psnr_vs_truth'])})"
                        for name, t in report["traces"].items())
    return save_panel_plot(path, panels, f"step (streams end to end: {streams})", columns=2)


def variant_names(paths: list[str]) -> dict[str, str]:
    """Name each variant by its recorded precision: ``fp16``, ``int8`` (the default target),
    ``int8_onnxruntime`` (another target); a repeated name gets a number."""
    from stae_deploy.calibration.targets import DEFAULT_TARGET
    from stae_deploy.runtime.onnx_session import open_session

    names: dict[str, str] = {}
    for path in paths:
        metadata = open_session(path)[1]
        target = metadata.notes.get(metadata.precision, {}).get("target", DEFAULT_TARGET)
        base = metadata.precision + ("" if target == DEFAULT_TARGET else f"_{target}")
        base = "fp32_variant" if base == "fp32" else base
        name, index = base, 2
        while name in names:
            name, index = f"{base}_{index}", index + 1
        names[name] = path
    return names


def drift_on_held_out_footage(fp32_path: str | Path, variant_paths: tuple[str, ...],
                              settings: DriftSettings, progress: bool = True) -> dict[str, Any]:
    """:func:`measure_drift` of the variants (named by :func:`variant_names`) against the fp32
    model over the held-out footage ``settings`` names, at the model's frame size."""
    fp32 = OnnxStepper(fp32_path)
    height, width = fp32.spec.data_inputs[0].shape[2:]
    streams = held_out_streams((height, width), settings.clips, settings.steps)
    return measure_drift(fp32_path, variant_names(list(variant_paths)), streams, progress=progress,
                         threads=settings.threads)
