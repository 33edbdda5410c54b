"""``stae train``: train a STAEConfig on real footage (MSE, Adam, cosine LR), resumably.

    stae train --config model.json --run-dir runs/demo --iterations 3000 [--resume]
    stae train --config model.json --run-dir runs/cam --video mycam/ 'more/*.mp4' --clips city
    stae train --config model.json --run-dir runs/ft --init-from demo.pt --video mycam.mp4 \
        --minutes 10 --iterations 100000 --lr 1e-4 --lr-min 1e-5      # fine-tune on a budget

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
    for name in ("lr", "lr_min", "holdout_fraction", "grad_clip", "pause_probability",
                 "synthetic_fraction"):
        parser.add_argument("--" + name.replace("_", "-"), type=float,
                            default=getattr(defaults, name))
    parser.add_argument("--clips", nargs="*", default=None,
                        help=f"registered clips to train on (default: {' '.join(defaults.clips)}, "
                             f"or none when --video is given)")
    parser.add_argument("--video", nargs="+", default=[], metavar="PATH",
                        help="video files, folders of videos or glob patterns to train on; each "
                             "is decoded once into the footage cache ($STAE_DATA_DIR)")
    parser.add_argument("--scales", nargs="*", type=int, default=[], metavar="N",
                        help="also crop training sequences from the videos resized to NxN "
                             "(e.g. 256: the motion of larger frames)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="time budget: stop after this many minutes of training (or "
                             "--iterations, whichever comes first)")
    parser.add_argument("--device", default="cpu",
                        help="auto, cpu, cuda or cuda:N (CUDA: bf16 autocast, channels-last)")
    parser.add_argument("--compile", action="store_true",
                        help="run the training rollout through torch.compile")
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
    from stae_deploy.stae_ref.video_cache import expand_video_paths

    clips = args.clips if args.clips is not None else [] if args.video else TrainConfig.clips
    config = TrainConfig(
        model=STAEConfig.load(args.config), clips=tuple(clips),
        videos=tuple(str(path) for path in expand_video_paths(args.video)),
        synthetic_fraction=args.synthetic_fraction, minutes=args.minutes,
        scales=tuple(args.scales),
        holdout_fraction=args.holdout_fraction, iterations=args.iterations, batch=args.batch,
        steps=args.steps, crop=args.crop, lr=args.lr, lr_min=args.lr_min,
        grad_clip=args.grad_clip, val_every=args.val_every, seed=args.seed, loss=args.loss,
        init_from=args.init_from, pause_probability=args.pause_probability,
        ema_decay=args.ema_decay)
    final = train(config, args.run_dir, resume=args.resume, progress=not args.quiet,
                  command="stae train " + " ".join(sys.argv[2:]), stop_after=args.stop_after,
                  threads=args.threads, device=args.device, compile_model=args.compile)
    print(json.dumps({"checkpoint": str(final) if final else None,
                      "paused": final is None, "run_dir": args.run_dir}))
    return 0
