"""``stae export``: one STAE time step to ONNX with explicit state (``stae_deploy.export.to_onnx``),
then every check of ``stae check`` with a short parity rollout (``--no-check`` skips them).

    stae export --checkpoint CKPT --output stae.onnx [--frame-size N] [--dynamic-batch]
                [--opset 20] [--graph fast|plain] [--range-steps 240] [--force]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from stae_deploy.cli.args import add_model_source, add_parity_check, model_source, parity_settings
from stae_deploy.cli.commands.check import print_check_report
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.onnx_artifact import OnnxArtifact


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.export.to_onnx import DEFAULT_GRAPH, DEFAULT_OPSET, GRAPHS

    add_model_source(parser)
    parser.add_argument("--output", "-o", required=True, help="the ONNX file to write")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="symbolic batch axis on every input and output (Triton, multi-stream)")
    parser.add_argument("--graph", choices=sorted(GRAPHS), default=DEFAULT_GRAPH,
                        help="fast: every Conv3d as a Conv2d over time-stacked channels (same "
                             "weights, same I/O); plain: the reference's ops one for one")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the graph checks and parity rollout after export")
    parser.add_argument("--range-steps", type=int, default=DEFAULT_RANGE_STEPS,
                        help="steps of --clip's training frames (forward then backward) whose "
                             "state ranges the export stores for `stae run`'s range guard "
                             "(0: none)")
    add_parity_check(parser, default_steps=8)


DEFAULT_RANGE_STEPS = 240          # as many as calibration plays per source


def run(args: argparse.Namespace) -> int:
    from stae_deploy.export.build_engine import BuildConfig, trtexec_command
    from stae_deploy.export.to_onnx import ExportSettings, export_onnx
    from stae_deploy.stae_ref.model_source import load_model
    from stae_deploy.verify.check_run import run_checks

    settings = ExportSettings(opset=args.opset, dynamic_batch=args.dynamic_batch,
                              graph=args.graph)
    checks = None if args.no_check else parity_settings(args)
    model, provenance = load_model(model_source(args))
    if "random_seed" in provenance:
        print("WARNING: no --checkpoint given: exporting SEEDED RANDOM WEIGHTS "
              f"(seed {provenance['random_seed']}). Predictions will be noise. Pass --checkpoint "
              "CKPT to export a trained model.", file=sys.stderr)
    height, width = model.config.frame_size
    print(f"exporting STAE {height}x{width} ({settings.graph} graph, opset {settings.opset}"
          f"{', dynamic batch' if settings.dynamic_batch else ''}) to {args.output} ...",
          file=sys.stderr)
    start = time.perf_counter()
    if args.range_steps < 0:
        raise ConfigError(f"--range-steps: expected >= 0, got {args.range_steps}")
    artifact = export_onnx(model, args.output, provenance, settings, force=args.force)
    if args.range_steps:
        artifact = with_rollout_ranges(artifact, args.clip, args.range_steps, not args.quiet)
    print(f"exported in {time.perf_counter() - start:.1f} s: {args.output} "
          f"({len(artifact.data) / 2 ** 20:.1f} MB)", file=sys.stderr)
    engine = Path(args.output).with_suffix(".engine")
    print("build a TensorRT engine with `stae build` or:\n  "
          + trtexec_command(args.output, engine, artifact.spec, BuildConfig()),
          file=sys.stderr)
    if checks is None:
        return 0
    return print_check_report(run_checks(artifact, checks, reference=model), args.json)


def with_rollout_ranges(artifact: OnnxArtifact, clip: str, steps: int, progress: bool
                        ) -> OnnxArtifact:
    """``artifact`` rewritten in place with the state ranges of a ``steps``-step rollout over
    ``clip``'s training frames in its metadata; returns the rewritten artifact."""
    from dataclasses import replace

    from stae_deploy.calibration.record import calibration_streams, record_state_ranges
    from stae_deploy.export.onnx_graph import save_model, write_metadata

    streams = calibration_streams(artifact.spec.frame_size, (clip,), (), steps)
    ranges = record_state_ranges(artifact, streams, progress)
    model = artifact.model_proto
    write_metadata(model, replace(artifact.metadata, state_ranges=ranges))
    return save_model(model, artifact.path)
