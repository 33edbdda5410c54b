"""``stae drift MODEL.onnx MODEL.int8.onnx [MODEL.fp16.onnx] --steps 1000 [--json] [--plot P]``:
does quantisation error build up in the recurrent state? (``stae_deploy.calibration.drift``)
Prints one row per variant and held-out clip, or the whole summary as JSON. Torch-free."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.calibration.drift import DriftSettings

    parser.add_argument("fp32", help="the fp32 ONNX export")
    parser.add_argument("variants", nargs="+",
                        help="quantised / FP16 variants of it (named by their precision)")
    parser.add_argument("--steps", type=int, default=DriftSettings.steps,
                        help="teacher-forced steps per clip (the memories take a few hundred "
                             "steps to settle; the slope is fitted on the last 60 %%)")
    parser.add_argument("--clips", nargs="+", default=list(DriftSettings.clips),
                        help="clips whose held-out frames are played forward and backward")
    parser.add_argument("--plot", default=None, help="write the per-step curves to this PNG")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --plot")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.calibration.drift import (DriftSettings, drift_on_held_out_footage,
                                               save_drift_plot)
    from stae_deploy.runtime.files import refuse_overwrite

    settings = DriftSettings(steps=args.steps, clips=tuple(args.clips), threads=args.threads)
    plot = refuse_overwrite(args.plot, args.force) if args.plot else None
    report = drift_on_held_out_footage(args.fp32, tuple(args.variants), settings)
    if plot:
        save_drift_plot(plot, report)
    summary = {k: v for k, v in report.items() if k != "traces"}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(drift_table(summary))
    print(f"fp32 vs truth: {summary['fp32']['psnr_vs_truth_db_mean']:.2f} dB "
          f"(copy-last {summary['fp32']['copy_last_psnr_db_mean']:.2f} dB)"
          + (f"; plot: {plot}" if plot else ""), file=sys.stderr)
    return 0


def drift_table(summary: dict[str, Any]) -> str:
    """One row per variant and stream of a drift summary: mean PSNR vs FP32 (dB), error over the
    predicted change, truth gap (dB), build-up slope (dB per 100 steps), final state error."""
    lines = [f"{'variant':<8}{'stream':<10}{'vsFP32 dB':>10}{'err/Δ':>8}{'truth gap':>10}"
             f"{'buildup dB/100':>15}{'state rel':>10}"]
    for stream, rows in summary["per_stream"].items():
        for name, row in rows.items():
            if name in ("fp32", "steps"):
                continue
            lines.append(f"{name:<8}{stream:<10}{row['psnr_vs_fp32_db_mean']:>10.2f}"
                         f"{row['err_over_delta_mean']:>8.3f}{row['truth_gap_db']:>+10.3f}"
                         f"{row['buildup_slope_db_per_100_steps']:>+15.3f}"
                         f"{row['state_rel_error_end']:>10.4f}")
    return "\n".join(lines)
