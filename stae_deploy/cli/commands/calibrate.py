"""``stae calibrate MODEL.onnx -o calib.npz [--clips city carphone motion] [--video my.mp4 ...]``:
record every graph input of an fp32 model along real rollouts (``stae_deploy.calibration.record``),
then print each tensor's range. Torch-free."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.calibration.record import CalibrationSettings

    parser.add_argument("model", help="the fp32 ONNX model exported by `stae export`")
    parser.add_argument("--output", "-o", required=True, help="calibration file to write (.npz)")
    parser.add_argument("--clips", nargs="*", default=list(CalibrationSettings.clips),
                        help="footage clips whose training frames are played")
    parser.add_argument("--video", nargs="*", default=[], help="your own video files")
    parser.add_argument("--steps-per-source", type=int,
                        default=CalibrationSettings.steps_per_source,
                        help="steps played per clip/video (forward, then backward)")
    parser.add_argument("--warmup", type=int, default=CalibrationSettings.warmup,
                        help="steps before the first sample (0: the start of a stream, from a "
                             "zero state, is calibrated too; every stream starts there)")
    parser.add_argument("--every", type=int, default=CalibrationSettings.every,
                        help="keep every N-th step after warm-up")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.calibration.calib_data import info_path
    from stae_deploy.calibration.record import CalibrationSettings, record_calibration_file

    settings = CalibrationSettings(clips=tuple(args.clips), videos=tuple(args.video),
                                   steps_per_source=args.steps_per_source, warmup=args.warmup,
                                   every=args.every)
    output, info = record_calibration_file(args.model, args.output, settings, force=args.force)
    print(f"{info.samples} samples from {', '.join(info.sources)} -> {output} "
          f"({output.stat().st_size / 2**20:.0f} MB) and {info_path(output)}", file=sys.stderr)
    print(f"{'tensor':<16}{'min':>10}{'max':>10}{'|max|':>10}{'|p99.99|':>10}")
    for name, span in info.ranges.items():
        print(f"{name:<16}{span.min:>10.3f}{span.max:>10.3f}{span.abs_max:>10.3f}"
              f"{span.abs_p9999:>10.3f}")
    return 0
