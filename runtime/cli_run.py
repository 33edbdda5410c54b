"""``stae run MODEL --input SRC [--input SRC2 ...]``: predict the next frames of live or
recorded videos; several inputs share the model in batched steps (a dynamic-batch export).

With one input, ``--output out.mp4`` and ``--metrics m.jsonl`` are that stream's files; with N
inputs each stream i writes ``out.i.mp4``, ``m.i.jsonl`` and ``latency.i.png``. The last line on
stdout is JSON: one stream's summary, or with several inputs ``{"streams": [...],
"throughput": {...}}``.

Torch-free: runs on a Jetson image with numpy, OpenCV, onnxruntime and/or TensorRT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stae_deploy.runtime.errors import ConfigError, SourceError
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.streaming import RunOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an ONNX file, or a TensorRT engine (.engine/.plan + .json)")
    parser.add_argument("--input", "-i", required=True, action="append",
                        help="video file, camera index (0), rtsp:// URL or GStreamer pipeline; "
                             "repeat for several cameras batched through one model")
    parser.add_argument("--output", "-o", default=None,
                        help="video file: actual | predicted | error heat-map")
    parser.add_argument("--metrics", default=None, help="per-step metrics as JSON lines")
    parser.add_argument("--latency-plot", default=None, help="PNG of per-step latency")
    parser.add_argument("--horizon", type=int, default=1, help="frames forecast per step")
    parser.add_argument("--max-frames", type=int, default=None, help="per stream")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most streams per batched step (default: all that have a frame)")
    parser.add_argument("--batch-timeout-ms", type=float, default=RunOptions.batch_timeout_ms,
                        help="how long a step waits for the other cameras once one has a frame")
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
    from contextlib import ExitStack

    from tqdm import tqdm

    from stae_deploy.runtime.predictor import Predictor
    from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
    from stae_deploy.runtime.streaming import StreamOutputs, run_streams

    if args.show and not _has_gui():
        raise ConfigError("--show: this OpenCV has no GUI (opencv-python-headless); drop --show "
                          "and use --output, or install opencv-python")
    inputs: list[str] = args.input
    paths = {"video": args.output, "metrics": args.metrics, "plot": args.latency_plot}
    per_stream = [{kind: refuse_overwrite(_stream_path(path, i, len(inputs)), args.force)
                   if path else None for kind, path in paths.items()}
                  for i in range(len(inputs))]
    predictor = Predictor.load(args.model, args.provider, args.threads, args.cuda_graphs,
                               args.max_batch)
    options = RunOptions(horizon=args.horizon, max_frames=args.max_frames, show=args.show,
                         output_fps=args.output_fps, batch_timeout_ms=args.batch_timeout_ms)
    height, width = predictor.frame_hw

    def log(message: str) -> None:
        tqdm.write(message, file=sys.stderr)

    log(f"model {args.model} ({predictor.metadata.precision}, {height}x{width}, up to "
        f"{predictor.max_batch or 'any number of'} stream(s) per step) on "
        f"{args.provider if Path(args.model).suffix == '.onnx' else 'tensorrt'}; "
        f"input {', '.join(inputs)}")
    with ExitStack() as stack:
        grabbers = [stack.enter_context(FrameGrabber(
            SourceConfig(uri, loop=args.loop, realtime=True if args.realtime else None,
                         reconnect_attempts=args.reconnect_attempts), log=log)) for uri in inputs]
        total = sum(args.max_frames or g.frame_count for g in grabbers) \
            if args.max_frames or all(g.frame_count for g in grabbers) else None
        progress = stack.enter_context(tqdm(total=total, unit="frame", disable=args.quiet,
                                            desc="stae run"))

        def on_step(index, summary, record) -> None:
            progress.update(1)
            progress.set_postfix(stream=index, infer_ms=f"{record['infer_ms']:.0f}",
                                 dropped=record["dropped_frames"],
                                 psnr=f"{record.get('psnr_db', float('nan')):.1f}")

        summaries, throughput = run_streams(
            predictor, grabbers, options,
            [StreamOutputs(files["video"], files["metrics"]) for files in per_stream],
            on_step=on_step, log=log)
    for uri, summary, files in zip(inputs, summaries, per_stream):
        if files["plot"] is not None:
            from stae_deploy.runtime.plots import save_line_plot

            save_line_plot(files["plot"], {"inference (ms)": summary.infer_ms,
                                           "capture to prediction (ms)": summary.latency_ms},
                           "step", "ms", f"stae run: latency per step ({uri})")
        for path in files.values():
            if path is not None and path.exists():
                print(f"wrote {path}", file=sys.stderr)
    failed = [(uri, s.error) for uri, s in zip(inputs, summaries) if s.error]
    if len(inputs) == 1:
        if failed:
            raise SourceError(failed[0][1])
        print(json.dumps(summaries[0].to_dict()))
        return 0
    for uri, error in failed:
        log(f"stream {inputs.index(uri)} ({uri}) ended early: {error}")
    print(json.dumps({"streams": [dict(input=uri, **s.to_dict())
                                  for uri, s in zip(inputs, summaries)],
                      "throughput": throughput.to_dict()}))
    return 1 if failed else 0


def _stream_path(path: str | None, index: int, streams: int) -> str | None:
    """Stream ``index``'s output file: ``path`` itself for one stream, else ``stem.index.ext``."""
    if path is None or streams == 1:
        return path
    base = Path(path)
    return str(base.with_name(f"{base.stem}.{index}{base.suffix}"))


def _has_gui() -> bool:
    """Whether this cv2 can open windows (``GUI: NONE`` in headless builds)."""
    import cv2

    return not any(line.strip().startswith("GUI:") and line.strip().endswith("NONE")
                   for line in cv2.getBuildInformation().splitlines())
