"""Training on long footage in bounded RAM: peak RSS of `stae train --video` and the cache's size.

    python -m stae_deploy.benchmarks.training_memory [--minutes-of-video 60] [--height 720]
        [--iterations 20] [--work-dir out/training_memory]

Writes a long 1280x720 video (MPEG-4 Part 2, 25 fps) by playing the city clip forward and
backward, then runs ``stae train --video`` on it in a child process: the first run decodes it
into the uint8 cache, a second run finds it there. Prints one JSON line per run: wall time, peak
RSS of the child (MiB, from ``getrusage``), the video's size and the cache's size on disk. The
frames are decoded to disk as they come and read through a memory map, so RSS should not grow
with the video's length.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from stae_deploy.runtime.frames import model_frame_to_bgr
from stae_deploy.stae_ref.footage import fetch, forward_backward_index, read_frames
from stae_deploy.stae_ref.video_cache import cache_size_bytes

FPS = 25.0
DEMO_CONFIG = Path(__file__).resolve().parents[1] / "stae_ref/checkpoints/demo/model_config.json"


def write_long_video(path: Path, minutes: float, height: int) -> Path:
    """``minutes`` of city at ``height`` p (16:9), forward and backward, as an mp4."""
    width = height * 16 // 9
    frames = np.stack([model_frame_to_bgr(f) for f in read_frames(fetch("city"), (height, width),
                                                                     0, 116)])
    count = int(minutes * 60 * FPS)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    for index in range(count):
        writer.write(frames[forward_backward_index(index, len(frames))])
        if index % 5000 == 0:
            print(f"writing {path.name}: {index}/{count} frames", file=sys.stderr, flush=True)
    writer.release()
    return path


def train_once(video: Path, run_dir: Path, iterations: int, cache: Path) -> dict[str, float]:
    """Run `stae train --video` in a child; its wall time and peak RSS (MiB)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [str(Path(sys.executable).parent / "stae"), "train", "--config", str(DEMO_CONFIG),
         "--run-dir", str(run_dir), "--video", str(video), "--iterations", str(iterations),
         "--val-every", str(iterations), "--crop", "64", "--batch", "8", "--steps", "12",
         "--threads", "2", "--quiet"], env={**os.environ, "STAE_DATA_DIR": str(cache)})
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"stae train failed with status {status}")
    return {"wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes-of-video", type=float, default=60.0)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--work-dir", default="out/training_memory")
    args = parser.parse_args()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    video = work / f"city_{args.minutes_of_video:g}min_{args.height}p.mp4"
    if not video.exists():
        write_long_video(video, args.minutes_of_video, args.height)
    cache = work / "cache"
    for attempt in ("first run (decodes into the cache)", "second run (cached)"):
        run_dir = work / f"run_{attempt.split()[0]}"
        subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        result = train_once(video, run_dir, args.iterations, cache)
        print(json.dumps({"run": attempt, "video_minutes": args.minutes_of_video,
                          "video_mib": round(video.stat().st_size / 2**20, 1),
                          "cache_mib": round(cache_size_bytes(cache) / 2**20, 1), **result}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
