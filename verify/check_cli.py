"""``stae check MODEL.onnx [--checkpoint CKPT] --steps N [--json]``: all export checks plus a
parity rollout on real footage against the reference; exit 0 when everything passes, 1 if not."""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from stae_deploy.stae_ref.footage import CLIPS, DEFAULT_CLIP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the ONNX file to check")
    parser.add_argument("--checkpoint", default=None,
                        help="the checkpoint the model was exported from (not needed for "
                             "seeded random weights: the seed is in the metadata)")
    add_check_arguments(parser, default_steps=100)


def add_check_arguments(parser: argparse.ArgumentParser, default_steps: int) -> None:
    """Options of the parity rollout, shared by ``stae export`` and ``stae check``."""
    group = parser.add_argument_group("parity rollout")
    group.add_argument("--steps", type=int, default=default_steps,
                       help="teacher-forced steps on real frames")
    group.add_argument("--horizon", type=int, default=4,
                       help="closed-loop horizon after the teacher-forced steps")
    group.add_argument("--clip", default=DEFAULT_CLIP, choices=sorted(CLIPS),
                       help="footage (played forward then backward when steps exceed it)")
    group.add_argument("--cache-dir", default=None, help="footage cache folder")
    group.add_argument("--tol", action="append", default=[], metavar="TENSOR=REL",
                       help="override the step-1 relative tolerance of one output tensor")
    group.add_argument("--json", action="store_true", help="print the report as JSON")
    group.add_argument("--plot", default=None, help="write per-step errors as a PNG here")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--save-polygraphy", default=None, metavar="DIR",
                       help="write one-step inputs and reference outputs for `polygraphy run`")
    group.add_argument("--polygraphy-steps", type=int, default=3,
                       help="steps saved by --save-polygraphy")


def run(args: argparse.Namespace) -> int:
    return run_checks_and_report(args.model, args)


def run_checks_and_report(path: str | Path, args: argparse.Namespace, reference=None) -> int:
    """Run every check on ``path`` and print the report; returns the process exit code.

    reference: the PyTorch model or an ``stae_deploy.verify.parity.StepReference``; by default the
    PyTorch reference the artifact's metadata names (``stae_deploy.verify.reference.reference_for``)."""
    from stae_deploy.verify.checks import check_artifact
    from stae_deploy.export.onnx_graph import load_model, verified_metadata
    from stae_deploy.verify.parity import TOLERANCES
    from stae_deploy.verify.reference import reference_for
    from stae_deploy.runtime.errors import ConfigError
    from stae_deploy.stae_ref.footage import forward_backward, load_clip
    from stae_deploy.stae_ref.model import STAE

    metadata = verified_metadata(load_model(path), str(path))
    if reference is None:
        reference = reference_for(metadata, str(path), getattr(args, "checkpoint", None))
    tolerances = TOLERANCES[metadata.precision]
    overrides = dict(tolerances.per_tensor)
    for item in args.tol:
        name, _, value = item.partition("=")
        if name not in {t.name for t in metadata.spec.outputs} or not value:
            raise ConfigError(f"--tol {item!r}: expected OUTPUT=REL with OUTPUT one of "
                              f"{[t.name for t in metadata.spec.outputs]}")
        overrides[name] = float(value)
    tolerances = replace(tolerances, per_tensor=overrides)
    if args.steps < 1 or args.horizon < 1:
        raise ConfigError(f"--steps {args.steps} --horizon {args.horizon}: both must be >= 1")
    frame_size = tuple(metadata.config["frame_size"])
    frames = forward_backward(load_clip(args.clip, frame_size, args.cache_dir),
                              args.steps + args.horizon)
    report = check_artifact(path, reference, frames, args.steps, args.horizon, tolerances,
                            progress=not args.quiet)
    if args.plot:
        _plot(report, args.plot)
    if args.save_polygraphy:
        if not isinstance(reference, STAE):
            raise ConfigError("--save-polygraphy: needs the PyTorch reference; pass --checkpoint")
        _save_polygraphy(path, metadata, reference, frames, args, tolerances.step1_max_rel)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    return 0 if report.passed else 1


def _save_polygraphy(path, metadata, reference, frames, args, tolerance: float) -> None:
    import sys

    from stae_deploy.verify.polygraphy_io import polygraphy_command, save_polygraphy_data

    inputs, outputs = save_polygraphy_data(metadata.spec, reference, frames,
                                           args.polygraphy_steps, args.save_polygraphy)
    # Polygraphy checks |out - ref| <= atol + rtol * |ref| element-wise.
    print(f"Polygraphy data in {args.save_polygraphy}; compare a TensorRT engine with:\n  "
          + polygraphy_command(path, inputs, outputs, "--trt", tolerance, tolerance),
          file=sys.stderr)


def _print_report(report) -> None:
    for check in report.checks:
        print(f"[{'PASS' if check.passed else 'FAIL'}] {check.name}: {check.detail}")
    parity = report.parity
    if parity is None:
        return
    print(f"[{'PASS' if parity.passed else 'FAIL'}] parity vs {parity.reference} "
          f"({parity.precision}), "
          f"{parity.steps} teacher-forced steps + closed loop to horizon {parity.horizon}")
    print(f"    {'tensor':<22}{'step-1 rel':>12}{'limit':>10}{'max abs':>12}{'max rel':>12}")
    for name, rel in parity.step1_max_rel.items():
        print(f"    {name:<22}{rel:>12.2e}{parity.tolerances.limit(name):>10.2e}"
              f"{parity.max_abs[name]:>12.2e}{parity.max_rel[name]:>12.2e}")
    worst = parity.worst
    print(f"    prediction PSNR vs {parity.reference}: min {parity.pred_psnr_db_min:.1f} dB "
          f"(limit {parity.tolerances.pred_psnr_db_min:.0f} dB)")
    print(f"    worst: step {worst['step']}, '{worst['tensor']}', rel {worst['value']:.2e} "
          f"(abs {worst['abs']:.2e})")
    closed = parity.closed_loop
    print("    closed loop, prediction max abs per horizon step (onnx vs ref | chaos baseline):")
    for h, (ours, chaos) in enumerate(zip(closed["prediction_max_abs"],
                                          closed["chaos_prediction_max_abs"]), start=1):
        print(f"      h={h}: {ours:.2e} | {chaos:.2e}")
    for failure in parity.failures:
        print(f"    FAIL: {failure}")
    print("PASSED" if report.passed else "FAILED")


def _plot(report, path: str) -> None:
    from stae_deploy.runtime.plots import save_line_plot

    parity = report.parity
    save_line_plot(path, {"prediction PSNR vs reference (dB)": parity.pred_psnr_db},
                   "teacher-forced step", "PSNR (dB)",
                   f"{Path(report.model).name}: {parity.precision} vs reference")
    state_path = Path(path).with_name(Path(path).stem + "_state_rel.png")
    save_line_plot(state_path, {"worst state tensor, relative error": parity.state_rel_per_step},
                   "teacher-forced step", "max |onnx - ref| / max(1, max |ref|)",
                   f"{Path(report.model).name}: state error per step")
