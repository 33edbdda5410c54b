"""``stae report``: one plot and one text summary from a `stae run` and a `stae predict` of the
same clip: per-step PSNR of the deployed model, of the PyTorch reference and of copy-last-frame.

Step k of `stae run`'s metrics scores the prediction made at frame k-1 against frame k, which is
entry k-1 of `stae predict`'s per-step lists; the two are aligned that way.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_line_plot


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", required=True, help="JSON lines from `stae run --metrics`")
    parser.add_argument("--reference", required=True, help="JSON from `stae predict`")
    parser.add_argument("--held-out-from", type=int, default=None,
                        help="first held-out frame index (marks the held-out part)")
    parser.add_argument("--output-dir", default="out")
    parser.add_argument("--force", action="store_true")


def run(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    plot_path = refuse_overwrite(out / "demo_psnr.png", args.force)
    summary_path = refuse_overwrite(out / "summary.txt", args.force)
    records = [json.loads(line) for line in Path(args.metrics).read_text().splitlines() if line]
    reference = json.loads(Path(args.reference).read_text())
    scored = [r for r in records if "psnr_db" in r]
    frames = [r["source_frame"] for r in scored]
    deployed = [r["psnr_db"] for r in scored]
    copy_last = [r["copy_last_psnr_db"] for r in scored]
    ref = [reference["model_psnr_db"][f - 1] for f in frames if f - 1 < len(reference["model_psnr_db"])]
    save_line_plot(plot_path, {"deployed model (stae run)": deployed,
                               "PyTorch reference": ref, "copy last frame": copy_last},
                   "frame", "PSNR vs actual frame (dB)",
                   f"next-frame prediction on {reference['clip']}")
    held = args.held_out_from
    lines = [f"clip: {reference['clip']}, frame size {reference['frame_size']}, "
             f"{len(scored)} scored steps"]
    for label, selector in (("all frames", lambda f: True),
                            (f"held-out frames (>= {held})", lambda f: held is not None and f >= held)):
        idx = [i for i, f in enumerate(frames) if selector(f)]
        if not idx:
            continue
        mean = lambda values: float(np.mean([values[i] for i in idx if i < len(values)]))  # noqa: E731
        lines.append(f"{label}: deployed {mean(deployed):.2f} dB, reference {mean(ref):.2f} dB, "
                     f"copy-last {mean(copy_last):.2f} dB, gain {mean(deployed) - mean(copy_last):+.2f} dB")
    latency = [r["infer_ms"] for r in records]
    lines.append(f"inference: median {np.median(latency):.1f} ms per step "
                 f"(onnxruntime CPU, this machine)")
    summary_path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
