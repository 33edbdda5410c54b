"""The ``stae`` command: one console script, one module per subcommand, imported lazily.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``. Only the chosen
one is imported, so runtime commands never pull in torch. User errors (``StaeError``) print one
clear line and exit 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from stae_deploy.runtime.errors import exit_code_of

# name -> (module in stae_deploy/cli/commands/, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("info", "config, derived sizes, parameters, GFLOP per step and the state protocol"),
    "data": ("data", "fetch, verify and list the real footage clips"),
    "predict": ("predict",
                "run the PyTorch reference over a clip: side-by-side video and PSNR plot"),
    "train": ("train", "train a model on the real footage (resumable, seeded)"),
    "eval": ("evaluate", "held-out next-frame PSNR/SSIM of a checkpoint vs copy-last-frame"),
    "export": ("export", "export one time step to ONNX with explicit state, then check it"),
    "check": ("check",
              "check an ONNX model: checker, shapes, TensorRT lint, protocol, parity rollout"),
    "fp16": ("fp16", "FP16 variant of an exported model (ModelOpt AutoCast), checked"),
    "calibrate": ("calibrate",
                  "record INT8 calibration inputs (frame + state) along real FP32 rollouts"),
    "quantize": ("quantize",
                 "INT8 Q/DQ graph (ModelOpt for TensorRT, or onnxruntime) from a calibration file"),
    "drift": ("drift", "step-after-step drift of INT8/FP16 variants vs FP32 on held-out footage"),
    "sensitivity": ("sensitivity",
                    "INT8 cost of each node group, one at a time (justifies the exclusions)"),
    "build": ("build", "TensorRT engine (strongly typed) + sidecar from an ONNX"),
    "triton": ("triton",
               "NVIDIA Triton model repository (sequence batcher, implicit state) from a dynamic-"
               "batch ONNX or its engine"),
    "serve": ("serve", "start the bundled Triton server on 127.0.0.1 for a model repository"),
    "bench": ("bench",
              "per-step latency, GFLOP/s and peak memory of every backend, interleaved in one run"),
    "run": ("run", "predict the next frames of a camera, stream or video file"),
    "report": ("report", "PSNR plot and summary from `stae run` + `stae predict`"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stae`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        _top_level_parser().parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"{__package__}.commands.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"stae {name}", description=COMMANDS[name][1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return exit_code_of(f"stae {name}", lambda: module.run(args))


def _top_level_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stae", description="STAE video prediction: reference, export, runtime.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<10} {h}" for n, (_, h) in COMMANDS.items())
               + "\n\nRun 'stae COMMAND --help' for a command's options.")
    parser.add_argument("command", choices=sorted(COMMANDS))
    return parser


if __name__ == "__main__":
    sys.exit(main())
