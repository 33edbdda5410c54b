"""Argument groups shared by several ``stae`` commands, each turned into the frozen config the
library takes: model source (:class:`ModelSource`), the onnxruntime provider, the parity rollout
(:class:`ParitySettings`) and the INT8 precision policy (:class:`QuantPolicy`)."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stae_deploy.calibration.policy import DEFAULT_POLICY, QuantPolicy
from stae_deploy.stae_ref.model_source import ModelSource

if TYPE_CHECKING:   # the verify package imports torch; only the commands that check load it
    from stae_deploy.verify.check_run import ParitySettings


def frame_size(text: str) -> tuple[int, int]:
    """Parse ``N`` (square) or ``HxW`` into (height, width) pixels."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive sizes, got {text!r}")
    return values  # type: ignore[return-value]


def add_model_source(parser: argparse.ArgumentParser) -> None:
    """--checkpoint CKPT | --config cfg.json, plus --frame-size and --seed."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a stae checkpoint (carries its config and weights)")
    source.add_argument("--config", help="a STAEConfig JSON file (random weights)")
    parser.add_argument("--frame-size", type=frame_size, default=None,
                        help="N or HxW; overrides the config's frame size")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random weights when no checkpoint is given")


def model_source(args: argparse.Namespace) -> ModelSource:
    """The :class:`ModelSource` of the arguments :func:`add_model_source` added."""
    return ModelSource(checkpoint=args.checkpoint, config=args.config,
                       frame_size=args.frame_size, seed=args.seed)


def add_provider(parser: argparse.ArgumentParser) -> None:
    """--provider: the onnxruntime execution provider (ONNX models), one of the backend's
    ``PROVIDERS``."""
    from stae_deploy.runtime.backends.onnxruntime_backend import PROVIDERS

    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu",
                        help="onnxruntime execution provider (ONNX models)")


def tensor_tolerance(text: str) -> tuple[str, float]:
    """Parse ``TENSOR=REL`` into (output tensor name, step-1 relative tolerance)."""
    name, _, value = text.partition("=")
    try:
        tolerance = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected OUTPUT=REL, got {text!r}") from None
    if not name:
        raise argparse.ArgumentTypeError(f"expected OUTPUT=REL, got {text!r}")
    return name, tolerance


def add_parity_check(parser: argparse.ArgumentParser, default_steps: int) -> None:
    """The parity rollout's options (:class:`ParitySettings`) and --json, shared by ``stae
    export``, ``check``, ``fp16`` and ``quantize``."""
    from stae_deploy.stae_ref.footage import CLIPS, DEFAULT_CLIP

    group = parser.add_argument_group("parity rollout")
    group.add_argument("--steps", type=int, default=default_steps,
                       help="teacher-forced steps on real frames")
    group.add_argument("--horizon", type=int, default=4,
                       help="closed-loop horizon after the teacher-forced steps")
    group.add_argument("--clip", default=DEFAULT_CLIP, choices=sorted(CLIPS),
                       help="footage (played forward then backward when steps exceed it)")
    group.add_argument("--cache-dir", default=None, help="footage cache folder")
    group.add_argument("--tol", type=tensor_tolerance, action="append", default=[],
                       metavar="TENSOR=REL",
                       help="override the step-1 relative tolerance of one output tensor")
    group.add_argument("--json", action="store_true", help="print the report as JSON")
    group.add_argument("--plot", default=None, help="write per-step errors as a PNG here")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    group.add_argument("--save-polygraphy", default=None, metavar="DIR",
                       help="write one-step inputs and reference outputs for `polygraphy run`")
    group.add_argument("--polygraphy-steps", type=int, default=3,
                       help="steps saved by --save-polygraphy")


def parity_settings(args: argparse.Namespace) -> ParitySettings:
    """The :class:`ParitySettings` of the arguments :func:`add_parity_check` added."""
    from stae_deploy.verify.check_run import ParitySettings

    return ParitySettings(steps=args.steps, horizon=args.horizon, clip=args.clip,
                          cache_dir=args.cache_dir, tolerance_overrides=tuple(args.tol),
                          progress=not args.quiet, plot=args.plot,
                          polygraphy_dir=args.save_polygraphy,
                          polygraphy_steps=args.polygraphy_steps)


def add_quant_policy(parser: argparse.ArgumentParser) -> None:
    """--op-types, --exclude-groups, --exclude-nodes, --quantize-unbounded-state-convs: what INT8
    quantises (:class:`QuantPolicy`; defaults: ``DEFAULT_POLICY``)."""
    parser.add_argument("--op-types", nargs="+", default=list(DEFAULT_POLICY.op_types),
                        help="op types to quantise ('all': every op the tool supports)")
    parser.add_argument("--exclude-groups", nargs="*", default=list(DEFAULT_POLICY.exclude_groups),
                        help="node groups kept FP32 (see calibration/node_groups.py)")
    parser.add_argument("--exclude-nodes", nargs="*", default=[], help="node names kept FP32")
    parser.add_argument("--quantize-unbounded-state-convs", action="store_true",
                        help="quantise the convolutions fed by a state the cell declares "
                             "unbounded too (default: they stay FP32)")


def quant_policy(args: argparse.Namespace) -> QuantPolicy:
    """The :class:`QuantPolicy` of the arguments :func:`add_quant_policy` added."""
    return QuantPolicy(op_types=tuple(args.op_types), exclude_groups=tuple(args.exclude_groups),
                       exclude_nodes=tuple(args.exclude_nodes),
                       quantize_unbounded_state_convs=args.quantize_unbounded_state_convs)
