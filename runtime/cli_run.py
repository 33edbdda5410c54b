"""``stae run MODEL --input SRC``: predict the next frames of a live or recorded video.

Torch-free: runs on a Jetson image with numpy, OpenCV, onnxruntime and/or TensorRT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.errors import ConfigError
from runtime.files import refuse_overwrite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an ONNX file, or a TensorRT engine (.engine/.plan + .json)")
    parser.add_argument("--input", "-i", required=True,
                        help="video file, camera index (0), rtsp:// URL or GStreamer pipeline")
    parser.add_argument("--output", "-o", default=None,
                        help="video file: actual | predicted | error heat-map")
    parser.add_argument("--metrics", default=None, help="per-step metrics as JSON lines")
    parser.add_argument("--latency-plot", default=None, help="PNG of per-step latency")
    parser.add_argument("--horizon", type=int, default=1, help="frames forecast per step")
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--provider", choices=("cpu", "cuda", "tensorrt"), default="cpu",
                        help="onnxruntime execution provider (ONNX models)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime CPU threads")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay CUDA graphs")
    parser.add_argument("--loop", action="store_true", help="restart a file at its end")
    parser.add_argument("--realtime", action="store_true",
                        help="pace a file at its frame rate and drop stale frames, like a camera")
    parser.add_argument("--reconnect-attempts", type=int, default=5)
    parser.add_argument("--show", action="store_true", help="show an OpenCV window")
    parser.add_argument("--output-fps", type=float, default=25.0)
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from runtime.predictor import Predictor
    from runtime.sources import FrameGrabber, SourceConfig
    from runtime.streaming import RunOptions, run_stream

    if args.show and not _has_gui():
        raise ConfigError("--show: this OpenCV has no GUI (opencv-python-headless); drop --show "
                          "and use --output, or install opencv-python")
    outputs = {name: refuse_overwrite(path, args.force) if path else None
               for name, path in (("video", args.output), ("metrics", args.metrics),
                                  ("plot", args.latency_plot))}
    predictor = Predictor.load(args.model, args.provider, args.threads, args.cuda_graphs)
    options = RunOptions(horizon=args.horizon, max_frames=args.max_frames,
                         video=outputs["video"], metrics=outputs["metrics"], show=args.show,
                         output_fps=args.output_fps)
    source = SourceConfig(args.input, loop=args.loop, realtime=True if args.realtime else None,
                          reconnect_attempts=args.reconnect_attempts)
    height, width = predictor.frame_hw
    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    log(f"model {args.model} ({predictor.metadata.precision}, {height}x{width}) on "
        f"{args.provider if Path(args.model).suffix == '.onnx' else 'tensorrt'}; input {args.input}")
    with FrameGrabber(source, log=log) as grabber, \
            tqdm(total=args.max_frames or (grabber.frame_count or None), unit="frame",
                 disable=args.quiet, desc="stae run") as progress:
        def on_step(summary, record) -> None:
            progress.update(1)
            progress.set_postfix(fps=f"{summary.steps / max(1e-9, sum(summary.infer_ms) / 1e3):.1f}",
                                 infer_ms=f"{record['infer_ms']:.0f}",
                                 dropped=record["dropped_frames"],
                                 psnr=f"{record.get('psnr_db', float('nan')):.1f}")

        summary = run_stream(predictor, grabber, options, on_step=on_step, log=log)
    if outputs["plot"] is not None:
        from runtime.plots import save_line_plot

        save_line_plot(outputs["plot"], {"inference (ms)": summary.infer_ms,
                                         "capture to prediction (ms)": summary.latency_ms},
                       "step", "ms", f"stae run: latency per step ({args.input})")
    print(json.dumps(summary.to_dict()))
    for path in outputs.values():
        if path is not None:
            print(f"wrote {path}", file=sys.stderr)
    return 0


def _has_gui() -> bool:
    """Whether this cv2 can open windows (``GUI: NONE`` in headless builds)."""
    import cv2

    return not any(line.strip().startswith("GUI:") and line.strip().endswith("NONE")
                   for line in cv2.getBuildInformation().splitlines())
