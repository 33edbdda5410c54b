"""Argument groups shared by several ``stae`` commands, each turned into the frozen config the
library takes: model source (:class:`ModelSource`) and the onnxruntime provider."""
from __future__ import annotations

import argparse

from stae_deploy.stae_ref.model_source import ModelSource


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
