"""``stae predict``: the PyTorch reference over a real clip, teacher-forced, next-frame.

Writes into ``--output-dir``: ``reference_side_by_side.mp4`` (actual next frame | prediction |
copy-last error), ``reference_psnr.png`` (per-step PSNR of the model and of copy-last-frame) and
``reference_psnr.json`` (the same numbers).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stae_deploy.cli.args import add_model_source, model_source
from stae_deploy.stae_ref.model_source import load_model
from stae_deploy.stae_ref.footage import CLIPS, DEFAULT_CLIP

OUTPUT_NAMES = ("reference_side_by_side.mp4", "reference_psnr.png", "reference_psnr.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_source(parser)
    parser.add_argument("--clip", default=DEFAULT_CLIP, choices=sorted(CLIPS))
    parser.add_argument("--max-frames", type=int, default=None, help="use at most N frames")
    parser.add_argument("--cache-dir", default=None, help="footage cache folder")
    parser.add_argument("--output-dir", default="out")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate of the video")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from stae_deploy.runtime.files import refuse_overwrite
    from stae_deploy.runtime.frames import model_frame_to_bgr
    from stae_deploy.runtime.media import VideoFileWriter, side_by_side
    from stae_deploy.runtime.metrics import psnr_db
    from stae_deploy.runtime.plots import save_line_plot
    from stae_deploy.stae_ref.footage import load_clip

    video_path, plot_path, json_path = (refuse_overwrite(Path(args.output_dir) / name, args.force)
                                        for name in OUTPUT_NAMES)
    model, _ = load_model(model_source(args))
    frame_size = model.config.frame_size
    frames = load_clip(args.clip, frame_size, args.cache_dir, args.max_frames)  # (K, 3, H, W)
    state = model.zero_state(1, frame_size)
    model_psnr, copy_last_psnr = [], []
    with VideoFileWriter(video_path, args.fps) as video, torch.no_grad():
        for t in tqdm(range(len(frames) - 1), desc=f"reference on {args.clip}", unit="step"):
            prediction, state = model.step(torch.from_numpy(frames[t])[None], state)
            predicted, actual = prediction[0].numpy(), frames[t + 1]
            model_psnr.append(psnr_db(np.clip(predicted, 0, 1), actual))
            copy_last_psnr.append(psnr_db(frames[t], actual))
            error = np.abs(np.clip(predicted, 0, 1) - actual).mean(axis=0, keepdims=True) * 4
            video.write(side_by_side([
                ("actual t+1", model_frame_to_bgr(actual)),
                (f"predicted  {model_psnr[-1]:.1f} dB", model_frame_to_bgr(predicted)),
                ("|error| x4", model_frame_to_bgr(np.repeat(error, 3, axis=0))),
            ]))
    save_line_plot(plot_path, {"STAE reference": model_psnr, "copy last frame": copy_last_psnr},
                   "step", "PSNR vs next frame (dB)",
                   f"{args.clip}, {frame_size[0]}x{frame_size[1]}, teacher-forced")
    summary = {"clip": args.clip, "frame_size": list(frame_size),
               "checkpoint": args.checkpoint, "model_psnr_db": model_psnr,
               "copy_last_psnr_db": copy_last_psnr,
               "model_psnr_db_mean": float(np.mean(model_psnr)),
               "copy_last_psnr_db_mean": float(np.mean(copy_last_psnr))}
    json_path.write_text(json.dumps(summary, indent=2))
    print(f"mean PSNR: model {summary['model_psnr_db_mean']:.2f} dB, copy-last "
          f"{summary['copy_last_psnr_db_mean']:.2f} dB over {len(model_psnr)} steps")
    for path in (video_path, plot_path, json_path):
        print(f"wrote {path}")
    return 0
