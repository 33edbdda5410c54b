"""``stae fp16 MODEL.onnx -o MODEL.fp16.onnx [--fp16-ops Conv ...] [--io-precision fp32|fp16]``:
the FP16 variant of an fp32 export (``stae_deploy.calibration.fp16``), then every check of
``stae check`` against the reference (``--no-check`` skips them)."""
from __future__ import annotations

import argparse
import sys
import time

from stae_deploy.cli.args import parity_settings
from stae_deploy.cli.commands.check import add_variant_check, check_variant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.calibration.fp16 import DEFAULT_FP16_OP_TYPES, IO_PRECISIONS

    parser.add_argument("model", help="an fp32 ONNX exported by `stae export`")
    parser.add_argument("--output", "-o", required=True, help="the FP16 ONNX file to write")
    parser.add_argument("--io-precision", choices=IO_PRECISIONS, default="fp32",
                        help="dtype of the graph's inputs and outputs, recurrent state included")
    parser.add_argument("--fp16-ops", nargs="+", default=list(DEFAULT_FP16_OP_TYPES),
                        metavar="OP_TYPE", help="op types computed in FP16 (all others FP32)")
    add_variant_check(parser, "converting")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.calibration.fp16 import FP16Settings, convert_fp16

    settings = FP16Settings(io_precision=args.io_precision, fp16_op_types=tuple(args.fp16_ops))
    checks = None if args.no_check else parity_settings(args)
    print(f"converting {args.model} to FP16 ({', '.join(settings.fp16_op_types)} in FP16, I/O "
          f"{settings.io_precision}) ...", file=sys.stderr)
    start = time.perf_counter()
    artifact = convert_fp16(args.model, args.output, settings, force=args.force)
    size_mb = len(artifact.data) / 2 ** 20
    print(f"converted in {time.perf_counter() - start:.1f} s: {args.output} ({size_mb:.1f} MB)",
          file=sys.stderr)
    return check_variant(args, artifact, checks)
