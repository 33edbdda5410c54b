"""The state-range guard on a long stream: `stae run`'s count of steps whose state left the
range recorded in each model (its calibration ranges), over one unbroken stream.

    python -m stae_deploy.benchmarks.range_guard_stream MODEL.onnx [MODEL2.onnx ...]
        [--clip city] [--steps 1000] [--margin 0.5] [--json F] [--force]

The stream is the clip's frames played forward then backward until ``--steps`` frames (a camera
left running, with no cut that would reset the state), written once as a video file and read
by ``run_streams`` as any file source. Per model: the steps out of range, the first such step,
the warning of each tensor that left its range, and the ranges the model carries.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.runtime.media import VideoFileWriter
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.range_guard import RangeGuardSettings
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_streams
from stae_deploy.stae_ref.footage import forward_backward, load_clip


def write_stream(clip: str, frame_hw: tuple[int, int], steps: int, path: Path) -> None:
    """``steps`` frames of ``clip`` forward then backward, as a video file at ``path``."""
    frames = forward_backward(load_clip(clip, frame_hw), steps)
    with VideoFileWriter(path, 25.0) as video:
        for frame in frames:
            video.write(model_frame_to_bgr(np.asarray(frame)))


def guard_one(model: str, video: Path, steps: int, margin: float) -> dict[str, Any]:
    """Run ``model`` over ``video`` with the guard warning; the guard's numbers."""
    predictor = Predictor.load(model)
    ranges = predictor.metadata.state_ranges
    if ranges is None:
        return {"model": Path(model).name, "state_ranges": None}
    warnings: list[str] = []
    first: list[int] = []

    def on_step(index: int, summary: Any, record: dict[str, Any]) -> None:
        if "state_out_of_range" in record and not first:
            first.append(record["step"])

    with FrameGrabber(SourceConfig(str(video))) as grabber:
        [summary], _ = run_streams(predictor, [grabber], RunOptions(
            max_frames=steps, range_guard=RangeGuardSettings("warn", margin)),
            on_step=on_step, log=warnings.append)
    return {"model": Path(model).name, "ranges_source": ranges.source,
            "steps": summary.steps, "out_of_range_steps": summary.out_of_range_steps,
            "first_out_of_range_step": first[0] if first else None,
            "warnings": [w for w in warnings if "state '" in w],
            "recorded_ranges": {k: [round(v, 3) for v in r] for k, r in ranges.ranges.items()}}


def run(models: Sequence[str], clip: str, steps: int, margin: float,
        json_path: Path | None = None, force: bool = False) -> list[dict[str, Any]]:
    """Every model over one ``steps``-frame stream of ``clip``; print and return the rows."""
    output = refuse_overwrite(json_path, force) if json_path else None
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        videos: dict[tuple[int, int], Path] = {}
        for model in models:
            frame_hw = Predictor.load(model).frame_hw
            if frame_hw not in videos:
                videos[frame_hw] = Path(scratch) / f"{clip}_{frame_hw[0]}x{frame_hw[1]}.mp4"
                write_stream(clip, frame_hw, steps, videos[frame_hw])
            print(f"{Path(model).name}: {steps} steps of {clip} ...", file=sys.stderr, flush=True)
            rows.append(guard_one(model, videos[frame_hw], steps, margin))
            row = rows[-1]
            print(f"{row['model']}: {row.get('out_of_range_steps')} of {row.get('steps')} steps "
                  f"out of range (first at step {row.get('first_out_of_range_step')}); ranges "
                  f"from {row.get('ranges_source')}")
            for warning in row.get("warnings", []):
                print(f"  {warning}")
    if output is not None:
        write_text(output, json.dumps({"clip": clip, "steps": steps, "margin": margin,
                                       "models": rows}, indent=2) + "\n")
        print(f"wrote {output}", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--clip", default="city")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--margin", type=float, default=RangeGuardSettings.margin)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    return exit_code_of("range_guard_stream", lambda: run(
        args.models, args.clip, args.steps, args.margin, args.json, args.force) and None)


if __name__ == "__main__":
    sys.exit(main())
