"""``stae eval CKPT``: next-frame PSNR/SSIM on held-out real frames, model vs copy-last-frame.

    stae eval CKPT                                   # the held-out tails it was trained beside
    stae eval CKPT --video mycam.mp4 diver --frame-size 256 [--start-fraction 0.8]

With ``--video`` (files, folders, globs or registered clip names) every frame of each video is
scored, or those from ``--start-fraction`` on, all and changing frames apart, with bootstrap
intervals (``stae_deploy.stae_ref.video_eval``).

The held-out split is the one recorded in the checkpoint's training config (default: the last
20 % of each clip). Prints a table, writes a PNG plot, and with ``--json`` the full report
(``stae_deploy.stae_ref.checkpoint_eval``).

The module is ``evaluate``, not ``eval``: a module named like the builtin would shadow it
wherever it is imported by name.
"""
from __future__ import annotations

import argparse
import json

from stae_deploy.cli.args import frame_size
from stae_deploy.runtime.repeated_frames import REPEAT_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The checkpoint, which clips and horizons, the plot and --json."""
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", nargs="+", default=None,
                        help="clips to evaluate (default: those it was trained on)")
    parser.add_argument("--horizons", type=int, default=4, help="closed-loop horizons 1..N")
    parser.add_argument("--plot", default=None, help="write the per-step PSNR plot here (PNG)")
    parser.add_argument("--long-stream", type=int, default=0, metavar="STEPS",
                        help="also run each clip forward and backward for STEPS steps and report "
                             "the state's and the PSNR gain's evolution per 100 steps")
    parser.add_argument("--video", nargs="+", default=None, metavar="PATH",
                        help="score any video instead: files, folders, globs or clip names")
    parser.add_argument("--frame-size", type=frame_size, default=None,
                        help="with --video: evaluate at N or HxW (default: the model's)")
    parser.add_argument("--start-fraction", type=float, default=0.0,
                        help="with --video: score targets from this fraction of each video on")
    parser.add_argument("--repeated-frames", choices=REPEAT_MODES, default="hold",
                        help="with --video: the runtime's repeated-frame policy to score")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint; print the per-clip table (or the report as JSON)."""
    from stae_deploy.stae_ref.checkpoint_eval import CheckpointEvalConfig, evaluate_checkpoint

    if args.video:
        return run_on_videos(args)

    report = evaluate_checkpoint(CheckpointEvalConfig(
        checkpoint=args.checkpoint, clips=args.clips, horizons=args.horizons,
        long_stream_steps=args.long_stream, plot=args.plot))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{'clip':<10}{'targets':>8}{'model dB':>10}{'copy dB':>10}{'gain':>8}"
          f"{'model SSIM':>12}{'copy SSIM':>11}")
    for name, clip in report["per_clip"].items():
        print(f"{name:<10}{clip['held_out_targets']:>8}{clip['model_psnr_db']:>10.2f}"
              f"{clip['copy_last_psnr_db']:>10.2f}{clip['gain_db']:>+8.2f}"
              f"{clip['model_ssim']:>12.4f}{clip['copy_last_ssim']:>11.4f}")
    print(f"{'all':<10}{'':>8}{report['model_psnr_db']:>10.2f}{report['copy_last_psnr_db']:>10.2f}"
          f"{report['model_psnr_db'] - report['copy_last_psnr_db']:>+8.2f}")
    for entry in report.get("horizon_psnr_db", []):
        print(f"closed loop h={entry['horizon']}: model {entry['model']:.2f} dB, "
              f"copy-last {entry['copy_last']:.2f} dB")
    for name, stability in report.get("long_stream", {}).items():
        print(f"{name}, {stability['steps']} steps forward/backward, per 100 steps: max |state| "
              f"{stability['state_max_abs_per_window']}, PSNR gain dB "
              f"{stability['gain_db_per_window']}")
    return 0


def run_on_videos(args: argparse.Namespace) -> int:
    """``--video``: score every video; print a table (or the report as JSON)."""
    from stae_deploy.stae_ref.video_eval import VideoEvalConfig, evaluate_videos

    report = evaluate_videos(VideoEvalConfig(
        checkpoint=args.checkpoint, videos=tuple(args.video), frame_size=args.frame_size,
        start_fraction=args.start_fraction, horizons=args.horizons,
        repeated_frames=args.repeated_frames, plot=args.plot))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    height, width = report["frame_size"]
    print(f"{args.checkpoint} at {height}x{width}, repeated frames: {report['repeated_frames']}")
    print(f"{'video':<14}{'targets':>8}{'repeated':>9}{'model dB':>10}{'copy dB':>9}{'gain':>8}"
          f"{'changing gain [95% CI]':>26}{'SSIM model/copy':>17}")
    for name, video in report["per_video"].items():
        low, high = video["changing_gain_db_ci95"]
        print(f"{name:<14}{video['targets']:>8}{video['repeated_targets']:>9}"
              f"{video['model_psnr_db']:>10.2f}{video['copy_last_psnr_db']:>9.2f}"
              f"{video['gain_db']:>+8.2f}{video['changing_gain_db']:>+12.2f} [{low:+.2f}, {high:+.2f}]"
              f"{video['model_ssim']:>9.4f}/{video['copy_last_ssim']:.4f}")
        for entry in video.get("horizon_psnr_db", []):
            print(f"  closed loop h={entry['horizon']}: model {entry['model']:.2f} dB, "
                  f"copy-last {entry['copy_last']:.2f} dB")
    return 0
