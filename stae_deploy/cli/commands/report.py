"""``stae report``: one plot and one text summary from a ``stae run`` and a ``stae predict`` of
the same clip: per-step PSNR of the deployed model, of the PyTorch reference and of
copy-last-frame (``stae_deploy.runtime.psnr_report``)."""
from __future__ import annotations

import argparse

from stae_deploy.runtime.psnr_report import PsnrReportConfig, write_psnr_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The two inputs, the held-out boundary and where the outputs go."""
    parser.add_argument("--metrics", required=True, help="JSON lines from `stae run --metrics`")
    parser.add_argument("--reference", required=True, help="JSON from `stae predict`")
    parser.add_argument("--held-out-from", type=int, default=None,
                        help="first held-out frame index (marks the held-out part)")
    parser.add_argument("--output-dir", default="out")
    parser.add_argument("--force", action="store_true")


def run(args: argparse.Namespace) -> int:
    """Write the plot and the summary; print the summary."""
    lines = write_psnr_report(PsnrReportConfig(
        metrics=args.metrics, reference=args.reference, held_out_from=args.held_out_from,
        output_dir=args.output_dir, force=args.force))
    print("\n".join(lines))
    return 0
