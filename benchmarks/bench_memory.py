"""Peak RSS of one bench backend, measured in a fresh process that imports only what it needs.

    python -m stae_deploy.benchmarks.bench_memory BACKEND ARTIFACT --frame-size H W \\
        --batch B --threads T [--steps N]

Opens the backend (no torch for the onnxruntime ones), runs N steps on a seeded random frame
(its content does not change the memory) and prints one JSON line: ``peak_rss_kib`` and
``torch_loaded``. :func:`peak_rss_mb` runs it.

The peak is ``VmHWM`` of ``/proc/self/status``: the high-water mark of this process's own
address space (Linux). ``getrusage(RUSAGE_SELF).ru_maxrss`` would not do: exec keeps the
parent's peak in it, so a child of the bench (itself holding torch and every model) reported
~540 MB for a 70 MB process.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from stae_deploy.benchmarks.bench_backends import BACKENDS, open_backend
from stae_deploy.benchmarks.bench_subprocess import run_module_json
from stae_deploy.runtime.errors import exit_code_of

MEMORY_STEPS = 3


def peak_rss_mb(key: str, artifact: str | Path, frame_size: tuple[int, int], batch: int,
                threads: int, steps: int = MEMORY_STEPS) -> float:
    """Peak resident memory in MiB of a fresh process that opens backend ``key`` from
    ``artifact`` and runs ``steps`` steps at ``frame_size`` (H, W) pixels and ``batch``."""
    answer = run_module_json("stae_deploy.benchmarks.bench_memory", [
        key, str(Path(artifact).resolve()), "--frame-size", *map(str, frame_size),
        "--batch", str(batch), "--threads", str(threads), "--steps", str(steps)])
    return answer["peak_rss_kib"] / 1024


def print_peak_rss(key: str, artifact: str, frame_size: tuple[int, int], batch: int,
                   threads: int, steps: int) -> None:
    """Open backend ``key`` from ``artifact``, run ``steps`` steps of ``batch`` frames of
    ``frame_size`` (H, W) pixels and print this process's peak RSS as one JSON line."""
    height, width = frame_size
    backend = open_backend(key, artifact, (height, width), batch, threads)
    frame = np.random.default_rng(0).random((batch, 3, height, width), dtype=np.float32)
    for _ in range(steps):
        backend.step(frame)
    print(json.dumps({"peak_rss_kib": own_peak_rss_kib(), "torch_loaded": "torch" in sys.modules}))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backend", choices=sorted(BACKENDS))
    parser.add_argument("artifact", help="checkpoint (eager) or ONNX file")
    parser.add_argument("--frame-size", type=int, nargs=2, required=True, metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--steps", type=int, default=MEMORY_STEPS)
    args = parser.parse_args(argv)
    height, width = args.frame_size
    return exit_code_of("bench_memory", lambda: print_peak_rss(
        args.backend, args.artifact, (height, width), args.batch, args.threads, args.steps))


def own_peak_rss_kib() -> int:
    """Peak resident memory of this process's own address space, KiB (see the module doc)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM:")).split()[1])


if __name__ == "__main__":
    sys.exit(main())
