"""Per-step time of INT8 / FP16 graphs vs their FP32 export on onnxruntime CPU (not TensorRT).

    python -m stae_deploy.benchmarks.int8_speed MODEL.onnx MODEL.int8.onnx [MORE.onnx ...]
        [--steps 60] [--threads N]

Every model steps the same city frames with ``session.run``, in lockstep (``stae bench``'s
interleaving: step t of each model back to back before step t + 1, so all feel the same machine
noise; onnxruntime workers do not spin between steps). Prints the median ms
per step and its ratio to the first (FP32) model, one JSON line per model. Says nothing about
TensorRT, whose INT8 kernels are another matter entirely.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

from stae_deploy.benchmarks.bench import city_frames, interleaved_latencies_ms
from stae_deploy.benchmarks.bench_backends import OnnxBackend
from stae_deploy.runtime.errors import exit_code_of
from stae_deploy.runtime.onnx_session import OnnxStepper

WARMUP = 5


def lockstep_step_ms(paths: list[str], steps: int, threads: int | None) -> dict[str, list[float]]:
    """Path -> per-step ms after warm-up, the models interleaved step by step."""
    backends = {path: OnnxBackend(path, 1, threads) for path in paths}
    frame_size = backends[paths[0]].spec.frame_size
    return interleaved_latencies_ms(backends, city_frames(frame_size, steps), 1, WARMUP,
                                    "lockstep")


def print_speeds(paths: list[str], steps: int, threads: int | None) -> None:
    """One JSON line per model: its precision, median ms per step and ratio to the first."""
    times = lockstep_step_ms(paths, steps, threads)
    base = statistics.median(times[paths[0]])
    for path, values in times.items():
        median = statistics.median(values)
        print(json.dumps({"model": path, "precision": OnnxStepper(path).metadata.precision,
                          "step_ms_median": round(median, 2), "steps": len(values),
                          "ratio_to_first": round(median / base, 3)}))


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="the FP32 export first, then its variants")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    return exit_code_of("int8_speed", lambda: print_speeds(args.models, args.steps, args.threads))


if __name__ == "__main__":
    sys.exit(main())
