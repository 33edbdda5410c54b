"""Argument helpers shared by the reference-side subcommands."""
from __future__ import annotations

import argparse

from stae_deploy.runtime.errors import ConfigError


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
    """--checkpoint CKPT | --config cfg.json, plus --frame-size."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a stae checkpoint (carries its config and weights)")
    source.add_argument("--config", help="a STAEConfig JSON file (random weights)")
    parser.add_argument("--frame-size", type=frame_size, default=None,
                        help="N or HxW; overrides the config's frame size")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random weights when no checkpoint is given")


def load_model(args: argparse.Namespace):
    """(model, provenance) from the parsed model-source arguments.

    ``provenance`` says where the weights came from: ``{"checkpoint": path,
    "checkpoint_sha256": ...}`` or ``{"random_seed": seed}``, plus ``"weights_sha256"``. The
    model's config carries ``--frame-size`` if given.
    """
    import torch

    from stae_deploy.runtime.files import sha256_file
    from stae_deploy.stae_ref.checkpoint import load_checkpoint, weights_sha256
    from stae_deploy.stae_ref.config import STAEConfig
    from stae_deploy.stae_ref.model import STAE

    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
        provenance = {"checkpoint": str(args.checkpoint),
                      "checkpoint_sha256": sha256_file(args.checkpoint)}
    else:
        config = STAEConfig.load(args.config) if args.config else STAEConfig()
        torch.manual_seed(args.seed)
        model, provenance = STAE(config).eval(), {"random_seed": args.seed}
    if args.frame_size is not None:
        try:
            model.config = model.config.with_frame_size(args.frame_size)
        except ConfigError as err:
            raise ConfigError(f"--frame-size {args.frame_size[0]}x{args.frame_size[1]}: {err}") \
                from None
    provenance["weights_sha256"] = weights_sha256(model)
    return model, provenance
