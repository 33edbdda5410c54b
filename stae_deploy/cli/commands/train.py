"""``stae train``: train a STAEConfig on real footage (MSE, Adam, cosine LR), resumably.

    stae train --config model.json --run-dir runs/demo --iterations 3000 [--resume]

Every ``--val-every`` iterations the run is scored on held-out frames and saved to
``RUN_DIR/last.pt``; at the end ``RUN_DIR/model.pt`` is a stae checkpoint
(``stae_deploy.stae_ref.train``). Prints one JSON line: the checkpoint, or that the run paused.
"""
from __future__ import annotations

import argparse
import json
import sys

from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.train import LOSSES, TrainConfig, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model config, the run folder, every :class:`TrainConfig` field and session options."""
    parser.add_argument("--config", required=True, help="STAEConfig JSON of the model to train")
    parser.add_argument("--run-dir", required=True, help="where the run's state and log live")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    defaults = TrainConfig(model=STAEConfig())
    for name in ("iterations", "batch", "steps", "crop", "val_every", "seed"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("lr", "lr_min", "holdout_fraction", "grad_clip", "pause_probability"):
        parser.add_argument("--" + name.replace("_", "-"), type=float,
                            default=getattr(defaults, name))
    parser.add_argument("--clips", nargs="+", default=list(defaults.clips))
    parser.add_argument("--loss", choices=LOSSES, default=defaults.loss,
                        help="mse: the paper's; psnr: minus the mean per-frame PSNR")
    parser.add_argument("--init-from", default=None,
                        help="start from this checkpoint's weights (same parameter shapes)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="validate and save an exponential moving average of the weights")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="pause after N iterations of this session (resume with --resume)")
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Train (or resume) the run; print its checkpoint, or that it paused, as JSON."""
    config = TrainConfig(
        model=STAEConfig.load(args.config), clips=tuple(args.clips),
        holdout_fraction=args.holdout_fraction, iterations=args.iterations, batch=args.batch,
        steps=args.steps, crop=args.crop, lr=args.lr, lr_min=args.lr_min,
        grad_clip=args.grad_clip, val_every=args.val_every, seed=args.seed, loss=args.loss,
        init_from=args.init_from, pause_probability=args.pause_probability,
        ema_decay=args.ema_decay)
    final = train(config, args.run_dir, resume=args.resume, progress=not args.quiet,
                  command="stae train " + " ".join(sys.argv[2:]), stop_after=args.stop_after,
                  threads=args.threads)
    print(json.dumps({"checkpoint": str(final) if final else None,
                      "paused": final is None, "run_dir": args.run_dir}))
    return 0
