"""``stae quantize MODEL.onnx --calib calib.npz -o MODEL.int8.onnx``: the INT8 (Q/DQ) graph of an
fp32 export (``stae_deploy.calibration.quantize``) under one precision policy, then every check
of ``stae check`` against the reference (``--no-check`` skips them).

    stae quantize MODEL.onnx --calib calib.npz -o MODEL.int8.onnx [--target tensorrt|onnxruntime]
        [--op-types Conv ...] [--exclude-groups head ...] [--exclude-nodes NAME ...]
        [--no-bias-correction]
"""
from __future__ import annotations

import argparse
import sys
import time

from stae_deploy.cli.args import add_quant_policy, parity_settings, quant_policy
from stae_deploy.cli.commands.check import add_variant_check, check_variant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.calibration.targets import DEFAULT_TARGET, TARGETS

    parser.add_argument("model", help="the fp32 ONNX model exported by `stae export`")
    parser.add_argument("--calib", required=True, help="calibration file from `stae calibrate`")
    parser.add_argument("--output", "-o", required=True, help="the INT8 ONNX file to write")
    parser.add_argument("--target", choices=sorted(TARGETS), default=DEFAULT_TARGET,
                        help="tensorrt: ModelOpt Q/DQ for TensorRT; onnxruntime: quantize_static")
    add_quant_policy(parser)
    parser.add_argument("--no-bias-correction", action="store_true",
                        help="keep the tool's biases (default: remove each INT8 conv's mean "
                             "output error, measured on the calibration data)")
    add_variant_check(parser, "quantising")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.calibration.quantize import quantize_model

    policy = quant_policy(args)
    checks = None if args.no_check else parity_settings(args)
    start = time.perf_counter()
    artifact = quantize_model(args.model, args.calib, args.output, args.target, policy, args.force,
                              bias_correction=not args.no_bias_correction,
                              progress=not args.quiet)
    notes = artifact.metadata.notes["int8"]
    print(f"quantised for {args.target} with {notes['tool']} in {time.perf_counter() - start:.1f} s "
          f"({notes['excluded_nodes']} nodes kept FP32 by the policy {policy.to_json()}): "
          f"{args.output} ({len(artifact.data) / 2**20:.1f} MB)", file=sys.stderr)
    return check_variant(args, artifact, checks)
