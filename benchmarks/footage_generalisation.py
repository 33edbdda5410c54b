"""Does a model hold on footage nobody trained on? Gain over copy-last per evaluation clip.

    python -m stae_deploy.benchmarks.footage_generalisation CKPT [CKPT ...] [--names A B ...]
        [--videos diver balle classroom] [--frame-sizes 128 256] [--start-fraction 0]
        [--markdown out/generalisation.md] [--json out/generalisation.json] [--threads 1]

For every checkpoint, frame size and video: ``stae eval --video``'s figures (the runtime's
repeated-frame policy, "hold"), the gain over copy-last on all targets and on changing targets
with 95 % bootstrap intervals over frames. On videos with repeated frames it also scores the
"step" policy (every frame a model step, the runtime's behaviour before repeated frames were
held), so the table shows what holding buys on repeats. Prints one JSON line per row and writes
a markdown table. A benchmark script, not a test.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from stae_deploy.stae_ref.video_eval import VideoEvalConfig, evaluate_videos

EVALUATION_CLIPS = ("diver", "balle", "classroom")


def rows_for(checkpoint: str, name: str, videos: tuple[str, ...], size: int,
             start_fraction: float) -> list[dict[str, Any]]:
    """One row per video (and per policy on videos with repeats) for ``checkpoint`` at size."""
    rows: list[dict[str, Any]] = []
    for policy in ("hold", "step"):
        if policy == "step":       # only where there are repeats for the policies to differ on
            videos = tuple(row["video"] for row in rows if row["repeated_targets"])
            if not videos:
                break
        report = evaluate_videos(VideoEvalConfig(checkpoint, videos, (size, size),
                                                 start_fraction, horizons=0,
                                                 repeated_frames=policy))
        for video, result in report["per_video"].items():
            rows.append({"model": name, "size": size, "video": video, "policy": policy,
                         **{k: result[k] for k in (
                             "targets", "repeated_targets", "gain_db", "gain_db_ci95",
                             "changing_gain_db", "changing_gain_db_ci95",
                             "repeated_model_psnr_db", "repeated_copy_last_psnr_db",
                             "model_ssim", "copy_last_ssim")}})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table: per model, size and video, gains with intervals (dB)."""
    lines = ["| model | size | clip | policy | targets (repeated) | gain, changing frames [95% CI] "
             "| gain, all frames [95% CI] | repeated targets: model / copy-last dB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        low, high = row["changing_gain_db_ci95"]
        all_low, all_high = row["gain_db_ci95"]
        repeats = (f"{row['repeated_model_psnr_db']:.1f} / {row['repeated_copy_last_psnr_db']:.1f}"
                   if row["repeated_targets"] else "-")
        lines.append(f"| {row['model']} | {row['size']} | {row['video']} | {row['policy']} | "
                     f"{row['targets']} ({row['repeated_targets']}) | "
                     f"{row['changing_gain_db']:+.2f} [{low:+.2f}, {high:+.2f}] | "
                     f"{row['gain_db']:+.2f} [{all_low:+.2f}, {all_high:+.2f}] | {repeats} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--names", nargs="+", default=None, help="a label per checkpoint")
    parser.add_argument("--videos", nargs="+", default=list(EVALUATION_CLIPS))
    parser.add_argument("--frame-sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--start-fraction", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.names or [Path(c).stem for c in args.checkpoints]
    if len(names) != len(args.checkpoints):
        parser.error(f"--names: {len(names)} labels for {len(args.checkpoints)} checkpoints")
    rows = []
    for checkpoint, name in zip(args.checkpoints, names):
        for size in args.frame_sizes:
            for row in rows_for(checkpoint, name, tuple(args.videos), size, args.start_fraction):
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
