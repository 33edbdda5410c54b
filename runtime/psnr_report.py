"""The demo's comparison of a ``stae run`` with a ``stae predict`` of the same clip: per-step
PSNR of the deployed model, of the PyTorch reference and of copy-last-frame, as one plot
(``demo_psnr.png``) and a text summary (``summary.txt``); what ``stae report`` writes.

Step k of ``stae run``'s metrics scores the prediction made at frame k-1 against frame k, which is
entry k-1 of ``stae predict``'s per-step lists; the two are aligned that way.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_line_plot

PLOT_NAME, SUMMARY_NAME = "demo_psnr.png", "summary.txt"


@dataclass(frozen=True)
class PsnrReportConfig:
    """metrics: JSON lines of ``stae run --metrics``. reference: the JSON ``stae predict`` wrote.
    held_out_from: first held-out frame index (its frames get their own line; None: no such
    line). output_dir: where the plot and the summary go. force: overwrite them."""

    metrics: str
    reference: str
    held_out_from: int | None = None
    output_dir: str = "out"
    force: bool = False

    def __post_init__(self) -> None:
        if self.held_out_from is not None and self.held_out_from < 0:
            raise ConfigError(f"held_out_from: expected a frame index >= 0, got "
                              f"{self.held_out_from}")


def write_psnr_report(config: PsnrReportConfig) -> list[str]:
    """Write the plot and the summary; return the summary's lines (mean PSNR in dB over all
    scored frames and over the held-out ones, and the median inference ms per step)."""
    out = Path(config.output_dir)
    plot_path = refuse_overwrite(out / PLOT_NAME, config.force)
    summary_path = refuse_overwrite(out / SUMMARY_NAME, config.force)
    records = [json.loads(line) for line in Path(config.metrics).read_text().splitlines() if line]
    reference = json.loads(Path(config.reference).read_text())
    scored = [r for r in records if "psnr_db" in r]
    frames = [r["source_frame"] for r in scored]
    deployed = [r["psnr_db"] for r in scored]
    copy_last = [r["copy_last_psnr_db"] for r in scored]
    ref = [reference["model_psnr_db"][f - 1] for f in frames
           if f - 1 < len(reference["model_psnr_db"])]
    save_line_plot(plot_path, {"deployed model (stae run)": deployed,
                               "PyTorch reference": ref, "copy last frame": copy_last},
                   "frame", "PSNR vs actual frame (dB)",
                   f"next-frame prediction on {reference['clip']}")
    held = config.held_out_from
    lines = [f"clip: {reference['clip']}, frame size {reference['frame_size']}, "
             f"{len(scored)} scored steps"]
    for label, selector in (("all frames", lambda f: True),
                            (f"held-out frames (>= {held})",
                             lambda f: held is not None and f >= held)):
        idx = [i for i, f in enumerate(frames) if selector(f)]
        if not idx:
            continue

        def mean(values: list[float]) -> float:
            return float(np.mean([values[i] for i in idx if i < len(values)]))

        lines.append(f"{label}: deployed {mean(deployed):.2f} dB, reference {mean(ref):.2f} dB, "
                     f"copy-last {mean(copy_last):.2f} dB, "
                     f"gain {mean(deployed) - mean(copy_last):+.2f} dB")
    latency = [r["infer_ms"] for r in records]
    lines.append(f"inference: median {np.median(latency):.1f} ms per step "
                 f"(onnxruntime CPU, this machine)")
    summary_path.write_text("\n".join(lines) + "\n")
    return lines
