"""PyTorch CPU step latency of the reference at several frame sizes (median of N steps).

    python -m stae_deploy.benchmarks.reference_step [--sizes 256 512] [--steps 20] [--threads N]

Prints parameters, GFLOP per step and median/min step latency in ms; steps run on real footage
(city) after a warm-up, state carried between steps, under torch.no_grad().
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from tqdm import tqdm

from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import load_clip
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.model_cost import gflop_per_step, parameter_count


def print_step_latencies(sizes: list[int], steps: int, warmup: int, threads: int) -> None:
    """One JSON line per frame size (square, pixels): parameters, GFLOP per step and the median /
    min ms of ``steps`` timed steps after ``warmup`` untimed ones, on ``threads`` torch threads."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = STAE(STAEConfig()).eval()
    results = []
    for size in sizes:
        frames = torch.from_numpy(load_clip("city", (size, size), max_frames=steps + warmup))
        state = model.zero_state(1, (size, size))
        latencies_ms = []
        with torch.no_grad():
            for t in tqdm(range(len(frames)), desc=f"{size}x{size}", unit="step"):
                start = time.perf_counter()
                _, state = model.step(frames[t:t + 1], state)
                if t >= warmup:
                    latencies_ms.append((time.perf_counter() - start) * 1e3)
        results.append({
            "frame_size": size, "threads": threads, "params": parameter_count(model),
            "gflop_per_step": round(gflop_per_step(model, (size, size)), 2),
            "step_ms_median": round(statistics.median(latencies_ms), 1),
            "step_ms_min": round(min(latencies_ms), 1), "steps": len(latencies_ms)})
    for row in results:
        print(json.dumps(row))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    return exit_code_of("reference_step", lambda: print_step_latencies(
        args.sizes, args.steps, args.warmup, args.threads))


if __name__ == "__main__":
    sys.exit(main())
