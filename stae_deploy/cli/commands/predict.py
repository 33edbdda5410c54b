"""``stae predict``: the PyTorch reference over a real clip, teacher-forced, next-frame.

Writes into ``--output-dir``: ``reference_side_by_side.mp4`` (actual next frame | prediction |
|error| x4), ``reference_psnr.png`` (per-step PSNR of the model and of copy-last-frame) and
``reference_psnr.json`` (the same numbers); see ``stae_deploy.stae_ref.reference_prediction``.
"""
from __future__ import annotations

import argparse

from stae_deploy.cli.args import add_model_source, model_source
from stae_deploy.stae_ref.footage import CLIPS, DEFAULT_CLIP


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model source, the clip and where the outputs go."""
    add_model_source(parser)
    parser.add_argument("--clip", default=DEFAULT_CLIP, choices=sorted(CLIPS))
    parser.add_argument("--max-frames", type=int, default=None, help="use at most N frames")
    parser.add_argument("--cache-dir", default=None, help="footage cache folder")
    parser.add_argument("--output-dir", default="out")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the video")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    """Run the reference over the clip; print the mean PSNRs and the files written."""
    from stae_deploy.stae_ref.reference_prediction import ReferencePredictionConfig, predict_clip

    config = ReferencePredictionConfig(
        source=model_source(args), clip=args.clip, max_frames=args.max_frames,
        cache_dir=args.cache_dir, output_dir=args.output_dir, fps=args.fps, force=args.force)
    summary = predict_clip(config)
    print(f"mean PSNR: model {summary['model_psnr_db_mean']:.2f} dB, copy-last "
          f"{summary['copy_last_psnr_db_mean']:.2f} dB over {len(summary['model_psnr_db'])} steps")
    for path in config.output_paths():
        print(f"wrote {path}")
    return 0
