"""``stae run MODEL --input SRC [--input SRC2 ...]``: predict the next frames of live or
recorded videos; several inputs share the model in batched steps (a dynamic-batch export).

``stae run --server grpc://HOST:PORT[/MODEL] --input SRC ...`` streams the same way to a model
served by Triton (``stae triton --backend python`` + ``stae serve``): each input is its own
sequence, on the server its name routes to when ``--server`` is given several times
(``stae_deploy.serving.camera_routing``); outputs and metrics are those of a local run.

With one input, ``--output out.mp4`` and ``--metrics m.jsonl`` are that stream's files; with N
inputs each stream i writes ``out.i.mp4``, ``m.i.jsonl`` and ``latency.i.png``. The last line on
stdout is JSON: one stream's summary, or with several inputs ``{"streams": [...],
"throughput": {...}}``; see ``stae_deploy.runtime.stream_run``.

Torch-free: runs on a Jetson image with numpy, OpenCV, onnxruntime and/or TensorRT.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stae_deploy.cli.args import add_provider
from stae_deploy.runtime.errors import ConfigError, SourceError
from stae_deploy.runtime.event_clips import EventClipSettings
from stae_deploy.runtime.live_view import ViewSettings
from stae_deploy.runtime.range_guard import GUARD_MODES, RangeGuardSettings
from stae_deploy.runtime.surprise import SurpriseSettings
from stae_deploy.runtime.sources import SourceConfig
from stae_deploy.runtime.stream_run import (ModelRunConfig, ModelRunResult, RunOutputs,
                                            run_model, run_sources)
from stae_deploy.runtime.repeated_frames import REPEAT_MODES
from stae_deploy.runtime.streaming import RunOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, the sources, the outputs and the streaming loop's options."""
    parser.add_argument("model", nargs="?", default=None,
                        help="an ONNX file, or a TensorRT engine (.engine/.plan + .json); "
                             "omitted with --server")
    parser.add_argument("--server", action="append", default=None,
                        help="grpc://HOST:PORT[/MODEL]: stream to the model Triton serves there "
                             "(MODEL: default stae); repeat for several servers, each input "
                             "going to the one its name hashes to")
    parser.add_argument("--input", "-i", required=True, action="append",
                        help="video file, camera index (0), rtsp:// URL or GStreamer pipeline; "
                             "repeat for several cameras batched through one model")
    parser.add_argument("--output", "-o", default=None,
                        help="video file: actual | predicted | error heat-map")
    parser.add_argument("--metrics", default=None, help="per-step metrics as JSON lines")
    parser.add_argument("--latency-plot", default=None, help="PNG of per-step latency")
    parser.add_argument("--horizon", type=int, default=RunOptions.horizon,
                        help="frames forecast per step")
    parser.add_argument("--max-frames", type=int, default=None, help="per stream")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="most streams per batched step (default: all that have a frame)")
    parser.add_argument("--batch-timeout-ms", type=float, default=RunOptions.batch_timeout_ms,
                        help="how long a step waits for the other cameras once one has a frame")
    add_provider(parser)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime CPU threads")
    parser.add_argument("--cuda-graphs", action="store_true", help="TensorRT: replay CUDA graphs")
    parser.add_argument("--loop", action="store_true", help="restart a file at its end")
    parser.add_argument("--realtime", action="store_true",
                        help="pace a file at its frame rate and drop stale frames, like a camera")
    parser.add_argument("--reconnect-attempts", type=int,
                        default=SourceConfig.reconnect_attempts,
                        help="per lost camera, and per lost server sequence with --server (a "
                             "fresh sequence then starts; counted as a state loss)")
    parser.add_argument("--show", action="store_true", help="show an OpenCV window")
    parser.add_argument("--repeated-frames", choices=REPEAT_MODES, default=RunOptions.repeated_frames,
                        help="hold: a frame that repeats the previous one is not a model step "
                             "(the state holds; the stream emits the frame or its pending "
                             "prediction by its cadence); step: every frame is a step")
    parser.add_argument("--repeat-threshold", type=float, default=RunOptions.repeat_threshold,
                        help="mean absolute difference (frames in [0, 1]) up to which a frame "
                             "repeats the previous one")
    parser.add_argument("--output-fps", type=float, default=RunOptions.output_fps)
    parser.add_argument("--serve", default=None, metavar="HOST:PORT",
                        help="a live web view while the run lasts: one tile per stream, "
                             "/metrics (Prometheus) and /healthz (e.g. 127.0.0.1:8080)")
    parser.add_argument("--serve-remote", action="store_true",
                        help="allow --serve on an address other machines can reach")
    parser.add_argument("--serve-fps", type=float, default=ViewSettings.max_fps,
                        help="the live view's panels per second and stream, at most (each "
                             "costs the run a little CPU)")
    parser.add_argument("--events", default=None,
                        help="write every stream's surprise events here (JSON lines)")
    parser.add_argument("--event-clips", default=None, metavar="DIR",
                        help="write a short video around each surprise event into DIR "
                             "(streamI_frameN.mp4)")
    parser.add_argument("--event-clip-frames", type=int, default=EventClipSettings.frames_before,
                        metavar="N", help="steps before and after the event in each clip")
    parser.add_argument("--surprise-threshold", type=float, default=SurpriseSettings.threshold,
                        help="surprise score (robust standard deviations of the stream's own "
                             "recent prediction error) at which an event starts")
    parser.add_argument("--range-guard", choices=GUARD_MODES, default=RangeGuardSettings.mode,
                        help="when a stream's state leaves the range recorded in the model "
                             "(calibration or export): count and warn, also restart the "
                             "stream (reset), or do not check (off)")
    parser.add_argument("--range-margin", type=float, default=RangeGuardSettings.margin,
                        help="how far past the recorded range a state may go before it counts, "
                             "in range widths")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    """Run the model over the inputs; print the files written and the JSON summary. Exit 1
    when one of several streams ended early (one stream's failure is a SourceError)."""
    if args.show and not _has_gui():
        raise ConfigError("--show: this OpenCV has no GUI (opencv-python-headless); drop --show "
                          "and use --output, or install opencv-python")
    inputs: list[str] = args.input
    sources = tuple(SourceConfig(uri, loop=args.loop, realtime=True if args.realtime else None,
                                 reconnect_attempts=args.reconnect_attempts) for uri in inputs)
    options = RunOptions(horizon=args.horizon, max_frames=args.max_frames, show=args.show,
                         output_fps=args.output_fps, batch_timeout_ms=args.batch_timeout_ms,
                         repeated_frames=args.repeated_frames,
                         repeat_threshold=args.repeat_threshold,
                         surprise=SurpriseSettings(threshold=args.surprise_threshold),
                         range_guard=RangeGuardSettings(args.range_guard, args.range_margin))
    outputs = RunOutputs(video=args.output, metrics=args.metrics,
                         latency_plot=args.latency_plot, events=args.events,
                         event_clips=EventClipSettings(
                             Path(args.event_clips), args.event_clip_frames,
                             args.event_clip_frames, args.output_fps, args.force)
                         if args.event_clips else None, force=args.force)
    view = ViewSettings.parse(args.serve, args.serve_remote, args.serve_fps) if args.serve \
        else None
    if args.server:
        result = _run_served(args, sources, options, outputs, view)
    elif args.model is None:
        raise ConfigError("give the MODEL (an ONNX file or engine), or --server "
                          "grpc://HOST:PORT[/MODEL] for a model Triton serves")
    else:
        result = run_model(ModelRunConfig(
            model=args.model, sources=sources, options=options, outputs=outputs,
            provider=args.provider, threads=args.threads, cuda_graphs=args.cuda_graphs,
            max_batch=args.max_batch), progress=not args.quiet, view=view)
    for files in result.files:
        for path in files.existing():
            print(f"wrote {path}", file=sys.stderr)
    if args.events and Path(args.events).exists():
        print(f"wrote {args.events}", file=sys.stderr)
    for clip in result.event_clips:
        print(f"wrote {clip}", file=sys.stderr)
    failed = [(i, uri, s.error) for i, (uri, s) in enumerate(zip(inputs, result.summaries))
              if s.error]
    if len(inputs) == 1:
        if failed:
            raise SourceError(failed[0][2])
        print(json.dumps(result.summaries[0].to_dict()))
        return 0
    for index, uri, error in failed:
        print(f"stream {index} ({uri}) ended early: {error}", file=sys.stderr)
    print(json.dumps({"streams": [dict(input=uri, **s.to_dict())
                                  for uri, s in zip(inputs, result.summaries)],
                      "throughput": result.throughput.to_dict()}))
    return 1 if failed else 0


def _run_served(args: argparse.Namespace, sources: tuple[SourceConfig, ...], options: RunOptions,
                outputs: RunOutputs, view: ViewSettings | None) -> ModelRunResult:
    """The run with the model on Triton servers (``--server``)."""
    local_only = [flag for flag, given in (("MODEL", args.model), ("--threads", args.threads),
                                           ("--max-batch", args.max_batch),
                                           ("--cuda-graphs", args.cuda_graphs)) if given]
    if local_only:
        raise ConfigError(f"{', '.join(local_only)}: set by the server's model repository "
                          f"(`stae triton`), not by the client; drop them with --server")
    if options.horizon != 1:
        raise ConfigError(f"--horizon {options.horizon}: a served model predicts the next frame "
                          f"only; forecast further with the ONNX file locally")
    outputs.refuse_existing(len(sources))       # before connecting
    from stae_deploy.serving.triton_predictor import ServedPredictor

    with ServedPredictor.connect(args.server, args.reconnect_attempts, log=_log) as model:
        return run_sources(model, f"model served at {', '.join(args.server)}", sources,
                           options, outputs, progress=not args.quiet, view=view)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _has_gui() -> bool:
    """Whether this cv2 can open windows (``GUI: NONE`` in headless builds)."""
    import cv2

    return not any(line.strip().startswith("GUI:") and line.strip().endswith("NONE")
                   for line in cv2.getBuildInformation().splitlines())
