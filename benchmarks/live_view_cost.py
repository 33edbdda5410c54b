"""What the live web view costs: step throughput of `stae run` with and without ``--serve`` and
one open browser's worth of requests, side by side.

    python -m stae_deploy.benchmarks.live_view_cost MODEL.onnx [--streams 2] [--frames 250]
        [--repeats 5] [--max-fps 10] [--json F] [--force]

Each run streams ``--streams`` real clips (carphone, city, motion in turn) through
``run_streams`` for ``--frames`` frames per stream, every frame (files unpaced, so the run is as
fast as the model allows). "served" runs with the live view and a viewer doing what the page
does: one MJPEG connection per stream, ``/api/streams`` every second, and ``/metrics`` every
second (a scraper). The viewer is its own process, as a browser would be, on the same cores:
its CPU time is counted in the cost, and reported (cores it kept busy, from the children's
rusage) so that what a browser on another machine would not cost can be told apart. The two ways alternate which goes first in each repeat; the report gives each way's
median frames/s and the median of the per-repeat ratios (served / plain).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
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
from stae_deploy.runtime.machine import machine_info
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.runtime.sources import FrameGrabber, SourceConfig
from stae_deploy.runtime.streaming import RunOptions, run_streams
from stae_deploy.stae_ref.footage import fetch

POLL_INTERVAL_S = 1.0


def _viewer(url: str, streams: int) -> None:
    """What one open page does, plus a scraper: MJPEG per stream, the API and /metrics (until
    the process is terminated)."""
    stop = threading.Event()

    def watch(index: int) -> None:
        with urllib.request.urlopen(f"{url}stream/{index}.mjpg", timeout=30) as answer:
            while answer.read(65536):
                pass

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(streams)]
    for watcher in watchers:
        watcher.start()
    while not stop.wait(POLL_INTERVAL_S):
        for path in ("api/streams", "metrics"):
            with urllib.request.urlopen(url + path, timeout=30) as answer:
                answer.read()


def one_run(predictor: Predictor, clips: Sequence[str], frames: int, served: bool,
            max_fps: float) -> tuple[float, float]:
    """(frames/s of all streams together, the viewer's CPU seconds per run second) of one run,
    with the view and a viewer if ``served``."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ExitStack() as stack:
        grabbers = [stack.enter_context(FrameGrabber(SourceConfig(clip), log=lambda _: None))
                    for clip in clips]
        observers = []
        if served:
            view = stack.enter_context(LiveView(ViewSettings(port=0, max_fps=max_fps), clips,
                                                6.0))
            view.watch_sources(grabbers)
            observers.append(view)
            viewer = multiprocessing.get_context("fork").Process(
                target=_viewer, args=(view.url, len(clips)), daemon=True)
            viewer.start()
            stack.callback(viewer.join)
            stack.callback(viewer.terminate)
            time.sleep(0.5)                       # the page is open before the run starts
        _, throughput = run_streams(predictor, grabbers, RunOptions(max_frames=frames),
                                    observers=observers, log=lambda _: None)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    viewer_cpu_s = (children.ru_utime + children.ru_stime
                    - children_before.ru_utime - children_before.ru_stime)
    return throughput.frames / throughput.wall_s, viewer_cpu_s / throughput.wall_s


def run(model: str, streams: int, frames: int, repeats: int, max_fps: float,
        json_path: Path | None = None, force: bool = False) -> dict[str, Any]:
    """Measure both ways ``repeats`` times, interleaved; print and return the report."""
    output = refuse_overwrite(json_path, force) if json_path else None
    predictor = Predictor.load(model)
    clips = [str(fetch(CLIP_ORDER[i % len(CLIP_ORDER)])) for i in range(streams)]
    fps: dict[str, list[float]] = {"plain": [], "served": []}
    viewer_cores: list[float] = []
    for repeat in range(repeats):
        for way in (("plain", "served") if repeat % 2 == 0 else ("served", "plain")):
            frames_per_s, cores = one_run(predictor, clips, frames, way == "served", max_fps)
            fps[way].append(frames_per_s)
            if way == "served":
                viewer_cores.append(cores)
            print(f"repeat {repeat + 1}/{repeats}, {way}: {fps[way][-1]:.1f} frames/s",
                  file=sys.stderr, flush=True)
    ratios = [s / p for s, p in zip(fps["served"], fps["plain"])]
    report = {"model": Path(model).name, "frame_hw": list(predictor.frame_hw),
              "streams": streams, "frames_per_stream": frames, "repeats": repeats,
              "panels_per_s_per_stream": max_fps,
              "machine": machine_info(provider="cpu", threads="onnxruntime default"),
              "plain_fps_median": round(statistics.median(fps["plain"]), 2),
              "served_fps_median": round(statistics.median(fps["served"]), 2),
              "ratio_paired_median": round(statistics.median(ratios), 4),
              "cost_percent": round(100 * (1 - statistics.median(ratios)), 2),
              "viewer_cpu_cores_median": round(statistics.median(viewer_cores), 4),
              "plain_fps": [round(v, 2) for v in fps["plain"]],
              "served_fps": [round(v, 2) for v in fps["served"]]}
    print(f"plain {report['plain_fps_median']} frames/s, served with a viewer "
          f"{report['served_fps_median']} frames/s; cost {report['cost_percent']} % (median of "
          f"{repeats} paired ratios); the viewer process used "
          f"{report['viewer_cpu_cores_median']:.3f} cores")
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
