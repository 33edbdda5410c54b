"""One run of every check on an exported artifact (``stae check``, and after ``stae export``,
``stae fp16``, ``stae quantize``): the static checks plus a parity rollout on real footage against
the reference (``stae_deploy.verify.checks``), then the files asked for: per-step error plots and
Polygraphy inputs/outputs. :func:`format_check_report` is the report as text."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.stae_ref.footage import DEFAULT_CLIP, clip_source
from stae_deploy.verify.checks import CheckReport


@dataclass(frozen=True)
class ParitySettings:
    """How the parity rollout runs and what it writes.

    steps: teacher-forced steps on real frames, then a closed loop to ``horizon`` steps.
    clip: a footage clip (``stae_deploy.stae_ref.footage.CLIPS``), played forward then backward when
    the rollout is longer; cache_dir: its cache folder (None: the default).
    tolerance_overrides: (output tensor, step-1 relative tolerance) pairs replacing the table's.
    progress: show a progress bar. plot: write per-step errors as PNGs here (None: no plot).
    polygraphy_dir: write the first ``polygraphy_steps`` steps' inputs and reference outputs here
    for ``polygraphy run`` (None: none).
    """

    steps: int = 100
    horizon: int = 4
    clip: str = DEFAULT_CLIP
    cache_dir: str | None = None
    tolerance_overrides: tuple[tuple[str, float], ...] = ()
    progress: bool = True
    plot: str | None = None
    polygraphy_dir: str | None = None
    polygraphy_steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1 or self.horizon < 1:
            raise ConfigError(f"steps/horizon: both must be >= 1, got {self.steps} and "
                              f"{self.horizon}")
        clip_source(self.clip)                  # raises FootageError naming an unknown clip
        for name, tolerance in self.tolerance_overrides:
            if not tolerance > 0:
                raise ConfigError(f"tolerance_overrides: {name!r} needs a tolerance > 0, got "
                                  f"{tolerance}")
        if self.polygraphy_dir and not 1 <= self.polygraphy_steps <= self.steps + self.horizon:
            raise ConfigError(f"polygraphy_steps: expected 1..{self.steps + self.horizon} (the "
                              f"rollout's frames), got {self.polygraphy_steps}")


def run_checks(source: str | Path | OnnxArtifact, settings: ParitySettings, reference=None,
               checkpoint: str | Path | None = None) -> CheckReport:
    """Every check on the artifact ``source`` (a path, read and verified once, or an artifact
    already open, e.g. the one ``export_onnx`` returns), the parity rollout included; writes
    the plot and Polygraphy files ``settings`` asks for.

    reference: the PyTorch model or an ``stae_deploy.verify.parity.StepReference``; by default
    the PyTorch reference the artifact's metadata names
    (``stae_deploy.verify.reference.reference_for``), rebuilt from ``checkpoint`` when it was
    exported from one."""
    from stae_deploy.verify.checks import check_artifact
    from stae_deploy.verify.parity import TOLERANCES
    from stae_deploy.verify.reference import reference_for
    from stae_deploy.stae_ref.footage import forward_backward, load_clip
    from stae_deploy.stae_ref.model import STAE

    artifact = source if isinstance(source, OnnxArtifact) else OnnxArtifact.open(source)
    path, metadata = artifact.path, artifact.metadata
    if reference is None:
        reference = reference_for(metadata, str(path), checkpoint)
    tolerances = TOLERANCES[metadata.precision]
    outputs = [t.name for t in metadata.spec.outputs]
    unknown = sorted({name for name, _ in settings.tolerance_overrides} - set(outputs))
    if unknown:
        raise ConfigError(f"tolerance_overrides: {unknown} are not outputs of {path}; expected "
                          f"names among {outputs}")
    tolerances = replace(tolerances, per_tensor={**tolerances.per_tensor,
                                                 **dict(settings.tolerance_overrides)})
    frame_size = metadata.spec.frame_size
    frames = forward_backward(load_clip(settings.clip, frame_size, settings.cache_dir),
                              settings.steps + settings.horizon)
    report = check_artifact(artifact, reference, frames, settings.steps, settings.horizon,
                            tolerances, progress=settings.progress)
    if settings.plot:
        _plot(report, settings.plot)
    if settings.polygraphy_dir:
        if not isinstance(reference, STAE):
            raise ConfigError("polygraphy_dir: needs the PyTorch reference; pass --checkpoint")
        _save_polygraphy(path, metadata, reference, frames, settings, tolerances.step1_max_rel)
    return report


def _save_polygraphy(path, metadata, reference, frames, settings: ParitySettings,
                     tolerance: float) -> None:
    from stae_deploy.verify.polygraphy_io import polygraphy_command, save_polygraphy_data

    inputs, outputs = save_polygraphy_data(metadata.spec, reference, frames,
                                           settings.polygraphy_steps, settings.polygraphy_dir)
    # Polygraphy checks |out - ref| <= atol + rtol * |ref| element-wise.
    print(f"Polygraphy data in {settings.polygraphy_dir}; compare a TensorRT engine with:\n  "
          + polygraphy_command(path, inputs, outputs, "--trt", tolerance, tolerance),
          file=sys.stderr)


def format_check_report(report: CheckReport) -> str:
    """The report as text: one line per check, the parity table, PASSED or FAILED last."""
    lines = [f"[{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}"
             for check in report.checks]
    parity = report.parity
    if parity is None:
        return "\n".join(lines)
    lines.append(f"[{'PASS' if parity.passed else 'FAIL'}] parity vs {parity.reference} "
                 f"({parity.precision}), "
                 f"{parity.steps} teacher-forced steps + closed loop to horizon {parity.horizon}")
    lines.append(f"    {'tensor':<22}{'step-1 rel':>12}{'limit':>10}{'max abs':>12}{'max rel':>12}")
    for name, rel in parity.step1_max_rel.items():
        lines.append(f"    {name:<22}{rel:>12.2e}{parity.tolerances.limit(name):>10.2e}"
                     f"{parity.max_abs[name]:>12.2e}{parity.max_rel[name]:>12.2e}")
    worst = parity.worst
    lines.append(f"    prediction PSNR vs {parity.reference}: min {parity.pred_psnr_db_min:.1f} dB "
                 f"(limit {parity.tolerances.pred_psnr_db_min:.0f} dB)")
    lines.append(f"    worst: step {worst['step']}, '{worst['tensor']}', rel {worst['value']:.2e} "
                 f"(abs {worst['abs']:.2e})")
    closed = parity.closed_loop
    lines.append("    closed loop, prediction max abs per horizon step (onnx vs ref | chaos "
                 "baseline):")
    for h, (ours, chaos) in enumerate(zip(closed["prediction_max_abs"],
                                          closed["chaos_prediction_max_abs"]), start=1):
        lines.append(f"      h={h}: {ours:.2e} | {chaos:.2e}")
    lines += [f"    FAIL: {failure}" for failure in parity.failures]
    lines.append("PASSED" if report.passed else "FAILED")
    return "\n".join(lines)


def _plot(report: CheckReport, path: str) -> None:
    from stae_deploy.runtime.plots import save_line_plot

    parity = report.parity
    save_line_plot(path, {"prediction PSNR vs reference (dB)": parity.pred_psnr_db},
                   "teacher-forced step", "PSNR (dB)",
                   f"{Path(report.model).name}: {parity.precision} vs reference")
    state_path = Path(path).with_name(Path(path).stem + "_state_rel.png")
    save_line_plot(state_path, {"worst state tensor, relative error": parity.state_rel_per_step},
                   "teacher-forced step", "max |onnx - ref| / max(1, max |ref|)",
                   f"{Path(report.model).name}: state error per step")
