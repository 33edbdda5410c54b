"""``stae eval CKPT``: next-frame PSNR/SSIM on held-out real frames, model vs copy-last-frame.

The held-out split is the one recorded in the checkpoint's training config (default: the last
20 % of each clip). Prints a table, writes a PNG plot, and with ``--json`` the full report.
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint")
    parser.add_argument("--clips", nargs="+", default=None,
                        help="clips to evaluate (default: those it was trained on)")
    parser.add_argument("--horizons", type=int, default=4, help="closed-loop horizons 1..N")
    parser.add_argument("--plot", default=None, help="write the per-step PSNR plot here (PNG)")
    parser.add_argument("--long-stream", type=int, default=0, metavar="STEPS",
                        help="also run each clip forward and backward for STEPS steps and report "
                             "the state's and the PSNR gain's evolution per 100 steps")
    parser.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.runtime.plots import save_line_plot
    from stae_deploy.stae_ref.checkpoint import load_checkpoint
    from stae_deploy.stae_ref.evaluation import evaluate
    from stae_deploy.stae_ref.training_data import DEFAULT_HOLDOUT_FRACTION, split_clips

    model, metadata = load_checkpoint(args.checkpoint)
    trained = metadata.get("train_config", {})
    clips = tuple(args.clips or trained.get("clips", ("city", "carphone")))
    splits = split_clips(clips, model.config.frame_size, trained.get("holdout_fraction",
                                                                    DEFAULT_HOLDOUT_FRACTION))
    report = evaluate(model, splits, horizons=args.horizons)
    report["checkpoint"] = args.checkpoint
    if args.long_stream:
        from stae_deploy.stae_ref.evaluation import long_stream_stability
        from stae_deploy.stae_ref.footage import forward_backward

        report["long_stream"] = {split.name: long_stream_stability(
            model, forward_backward(split.frames, args.long_stream + 1)) for split in splits}
    if args.plot:
        series = {}
        for name, clip in report["per_clip"].items():
            series[f"{name}: STAE"] = clip["model_psnr_db_per_step"]
            series[f"{name}: copy last frame"] = clip["copy_last_psnr_db_per_step"]
        save_line_plot(args.plot, series, "held-out step", "PSNR vs next frame (dB)",
                       f"{args.checkpoint}: held-out frames, teacher-forced")
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
