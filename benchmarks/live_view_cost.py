"""What the live web view costs: step throughput of `stae run` with and without ``--serve`` and
one open browser's worth of requests, side by side.

    python -m stae_deploy.benchmarks.live_view_cost MODEL.onnx [--streams 2] [--frames 250]
        [--repeats 5] [--max-fps 10] [--json F] [--force]

Each run streams ``--streams`` real clips (carphone, city, motion in turn) through
``run_streams`` for ``--frames`` frames per stream, every frame (files unpaced, so the run is as
fast as the model allows), three ways: "plain" without the view; "served" with the live view
and a viewer doing what the page does (one MJPEG connection per stream, ``/api/streams`` and
``/metrics`` every second) in its own spawned process on the same cores, as a browser on this
machine would be; "served_idle_viewer" the same with the viewer at idle priority, so that it
never preempts the run: what serving costs the run when the browser is on another machine. The
report gives, per served way, the median of the paired ratios to plain, the viewer's CPU (cores
it kept busy while watching) and the panels per second it received (so that a view starved of
CPU, which would cost nothing and show nothing, cannot pass for a cheap one).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.benchmarks.multistream_throughput import CLIP_ORDER
from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.live_view import LiveView, ViewSettings
from stae_deploy.runtime.live_view_server import BOUNDARY
from stae_deploy.runtime.machine import machine_info
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_streams
from stae_deploy.stae_ref.footage import fetch

POLL_INTERVAL_S = 1.0


WAYS = ("plain", "served", "served_idle_viewer")


def _viewer(url: str, idle: bool, panels_received: Any, cpu_s: Any) -> None:
    """What one open page does, plus a scraper: MJPEG per stream (counting the panels received
    in ``panels_received[stream]``), the API and /metrics every second, until terminated;
    ``cpu_s.value``: this process's CPU seconds since it started watching (every second).
    ``idle``: at Linux's idle priority, so that it never preempts the run (a browser on
    another machine)."""
    if idle:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    start_cpu_s = time.process_time()

    def watch(index: int) -> None:
        marker = f"--{BOUNDARY}".encode()
        with urllib.request.urlopen(f"{url}stream/{index}.mjpg", timeout=60) as answer:
            while chunk := answer.read1(65536):
                panels_received[index] += chunk.count(marker)

    for index in range(len(panels_received)):
        threading.Thread(target=watch, args=(index,), daemon=True).start()
    while True:
        for path in ("api/streams", "metrics"):
            with urllib.request.urlopen(url + path, timeout=60) as answer:
                answer.read()
        cpu_s.value = time.process_time() - start_cpu_s
        time.sleep(POLL_INTERVAL_S)


def one_run(predictor: Predictor, clips: Sequence[str], frames: int, way: str,
            max_fps: float) -> tuple[float, float, float]:
    """(frames/s of all streams together, the viewer's CPU seconds per run second, panels/s
    the viewer received per stream) of one run ``way`` (one of :data:`WAYS`)."""
    context = multiprocessing.get_context("spawn")    # a fresh process, as a browser is
    panels_received = context.Array("i", len(clips), lock=False)
    viewer_cpu_s = context.Value("d", 0.0, lock=False)
    with ExitStack() as stack:
        grabbers = [stack.enter_context(FrameGrabber(SourceConfig(clip), log=lambda _: None))
                    for clip in clips]
        observers = []
        if way != "plain":
            view = stack.enter_context(LiveView(ViewSettings(port=0, max_fps=max_fps), clips,
                                                6.0, predictor.frame_hw))
            view.watch_sources(grabbers)
            observers.append(view)
            viewer = context.Process(target=_viewer, daemon=True, args=(
                view.url, way == "served_idle_viewer", panels_received, viewer_cpu_s))
            viewer.start()
            stack.callback(viewer.join)
            stack.callback(viewer.terminate)
            while not view.watched():             # the page is open before the run starts
                time.sleep(0.05)
        _, throughput = run_streams(predictor, grabbers, RunOptions(max_frames=frames),
                                    observers=observers, log=lambda _: None)
    panels_per_s = statistics.fmean(panels_received) / throughput.wall_s
    return (throughput.frames / throughput.wall_s, viewer_cpu_s.value / throughput.wall_s,
            panels_per_s)


def run(model: str, streams: int, frames: int, repeats: int, max_fps: float,
        json_path: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Measure every way ``repeats`` times, interleaved (the order reversed every other
    repeat); print and return the report."""
    output = refuse_overwrite(json_path, force) if json_path else None
    predictor = Predictor.load(model)
    clips = [str(fetch(CLIP_ORDER[i % len(CLIP_ORDER)])) for i in range(streams)]
    runs: dict[str, list[tuple[float, float, float]]] = {way: [] for way in WAYS}
    for repeat in range(repeats):
        for way in (WAYS if repeat % 2 == 0 else WAYS[::-1]):
            runs[way].append(one_run(predictor, clips, frames, way, max_fps))
            print(f"repeat {repeat + 1}/{repeats}, {way}: {runs[way][-1][0]:.1f} frames/s",
                  file=sys.stderr, flush=True)
    plain_fps = [fps for fps, _, _ in runs["plain"]]
    report: dict[str, Any] = {
        "model": Path(model).name, "frame_hw": list(predictor.frame_hw), "streams": streams,
        "frames_per_stream": frames, "repeats": repeats, "panels_per_s_per_stream": max_fps,
        "machine": machine_info(provider="cpu", threads="onnxruntime default"),
        "plain_fps_median": round(statistics.median(plain_fps), 2),
        "plain_fps": [round(v, 2) for v in plain_fps]}
    for way in WAYS[1:]:
        fps = [fps for fps, _, _ in runs[way]]
        ratios = [served / plain for served, plain in zip(fps, plain_fps)]
        report[way] = {
            "fps_median": round(statistics.median(fps), 2),
            "ratio_paired_median": round(statistics.median(ratios), 4),
            "cost_percent": round(100 * (1 - statistics.median(ratios)), 2),
            "viewer_cpu_cores_median": round(statistics.median(r[1] for r in runs[way]), 4),
            "panels_received_per_s_per_stream_median": round(
                statistics.median(r[2] for r in runs[way]), 2),
            "fps": [round(v, 2) for v in fps]}
        print(f"{way}: {report[way]['fps_median']} frames/s vs plain "
              f"{report['plain_fps_median']}: cost {report[way]['cost_percent']} % (median of "
              f"{repeats} paired ratios); the viewer used "
              f"{report[way]['viewer_cpu_cores_median']:.3f} cores and received "
              f"{report[way]['panels_received_per_s_per_stream_median']} panels/s per stream")
    if output is not None:
        write_text(output, json.dumps(report, indent=2) + "\n")
        print(f"wrote {output}", file=sys.stderr)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--frames", type=int, default=250, help="per stream and run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-fps", type=float, default=ViewSettings.max_fps,
                        help="the view's panels per second and stream")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    return exit_code_of("live_view_cost", lambda: run(
        args.model, args.streams, args.frames, args.repeats, args.max_fps, args.json,
        args.force) and None)


if __name__ == "__main__":
    sys.exit(main())
