"""Per-step time of `stae run`'s loop vs calling the onnxruntime session directly (CPU).

    python -m stae_deploy.benchmarks.runtime_overhead MODEL.onnx [--steps 60] [--threads N]

Same model, same frames (the city clip at the model's size). Each step of the `stae run` loop
(decode on the capture thread, preprocess, Predictor.step with IOBinding ping-pong, PSNR, and,
in the second pass, composing and encoding the side-by-side video) is followed, inside the same
loop, by one "direct" step (session.run with the state fed back through numpy, on the already
decoded frame) and one bare Predictor.step. Interleaving step by step makes the three feel the
same machine noise; the ratio of medians is the runtime's overhead.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_stream
from stae_deploy.stae_ref.footage import fetch, load_clip

WARMUP = 5


def interleaved(model: str, steps: int, threads: int | None, video: Path | None
                ) -> dict[str, list[float]]:
    """Per-step ms of the three paths, measured in lockstep."""
    predictor = Predictor.load(model, threads=threads)
    bare, direct = Predictor.load(model, threads=threads), OnnxStepper(model, threads=threads)
    frames = load_clip("city", predictor.frame_hw, max_frames=steps)
    bare_stream, direct_state = bare.new_stream(), direct.zero_state()
    times: dict[str, list[float]] = {"stae run": [], "direct": [], "predictor": []}
    clock = {"loop_resumed": time.perf_counter()}

    def on_step(summary, record) -> None:
        nonlocal direct_state
        times["stae run"].append((time.perf_counter() - clock["loop_resumed"]) * 1e3)
        frame = frames[record["source_frame"]]
        start = time.perf_counter()
        _, direct_state, _ = direct.step(frame[None], direct_state)
        middle = time.perf_counter()
        bare.step(bare_stream, frame)
        times["direct"].append((middle - start) * 1e3)
        times["predictor"].append((time.perf_counter() - middle) * 1e3)
        clock["loop_resumed"] = time.perf_counter()

    with FrameGrabber(SourceConfig(str(fetch("city"))), log=lambda _: None) as grabber:
        clock["loop_resumed"] = time.perf_counter()
        run_stream(predictor, grabber, RunOptions(max_frames=steps, video=video), on_step=on_step)
    return {name: values[WARMUP:] for name, values in times.items()}


def print_overheads(model: str, steps: int, threads: int | None) -> None:
    """One JSON line per pass (without, then with video output) and path: median ms per step and
    the overhead over the direct session.run."""
    with tempfile.TemporaryDirectory() as scratch:
        for label, video in (("no video output", None),
                             ("--output video", Path(scratch) / "v.mp4")):
            times = interleaved(model, steps, threads, video)
            base = statistics.median(times["direct"])
            for name, values in times.items():
                median = statistics.median(values)
                print(json.dumps({"pass": label, "path": name, "step_ms_median": round(median, 2),
                                  "steps": len(values),
                                  "overhead_vs_direct": round(median / base - 1, 4)}))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    return exit_code_of("runtime_overhead",
                        lambda: print_overheads(args.model, args.steps, args.threads))


if __name__ == "__main__":
    sys.exit(main())
