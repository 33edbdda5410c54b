"""``stae sensitivity MODEL.onnx --calib calib.npz [--target tensorrt] [--steps 60] -o sweep.md``:
the INT8 cost of each node group alone (``stae_deploy.calibration.sensitivity``), written as a
markdown table (and its rows as OUTPUT.json) and printed."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.calibration.sensitivity import SensitivitySettings
    from stae_deploy.calibration.targets import TARGETS

    parser.add_argument("model", help="the fp32 ONNX export")
    parser.add_argument("--calib", required=True, help="calibration file from `stae calibrate`")
    parser.add_argument("--target", choices=sorted(TARGETS), default=SensitivitySettings.target)
    parser.add_argument("--steps", type=int, default=SensitivitySettings.steps,
                        help="teacher-forced steps per clip")
    parser.add_argument("--clips", nargs="+", default=list(SensitivitySettings.clips))
    parser.add_argument("--output", "-o", required=True,
                        help="markdown table to write (the rows also go to OUTPUT.json)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.calibration.sensitivity import (SensitivitySettings, markdown_table,
                                                     sensitivity_sweep)
    from stae_deploy.runtime.files import refuse_overwrite

    settings = SensitivitySettings(target=args.target, steps=args.steps, clips=tuple(args.clips))
    output = refuse_overwrite(args.output, args.force)
    rows_path = refuse_overwrite(str(output) + ".json", args.force)
    rows = sensitivity_sweep(args.model, args.calib, settings)
    table = markdown_table(rows, settings)
    output.write_text(table)
    rows_path.write_text(json.dumps(rows, indent=2))
    print(table)
    return 0
