"""Per-step time of INT8 / FP16 graphs vs their FP32 export on onnxruntime CPU (not TensorRT).

    python benchmarks/int8_speed.py MODEL.onnx MODEL.int8.onnx [MORE.onnx ...] [--steps 60]

Every model steps the same city frames with ``session.run``, in lockstep: step t of each model
runs back to back before step t + 1, so all feel the same machine noise. Prints the median ms
per step and its ratio to the first (FP32) model, one JSON line per model. Says nothing about
TensorRT, whose INT8 kernels are another matter entirely.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from runtime.onnx_session import OnnxStepper
from stae_ref.footage import load_clip

WARMUP = 5


def lockstep_step_ms(paths: list[str], steps: int, threads: int | None) -> dict[str, list[float]]:
    """Path -> per-step ms after warm-up, the models interleaved step by step."""
    steppers = {path: OnnxStepper(path, threads=threads) for path in paths}
    first = steppers[paths[0]]
    frames = load_clip("city", tuple(first.spec.data_inputs[0].shape[2:]), max_frames=steps)
    states = {path: stepper.zero_state(1) for path, stepper in steppers.items()}
    times: dict[str, list[float]] = {path: [] for path in paths}
    for t in range(steps):
        for path, stepper in steppers.items():
            start = time.perf_counter()
            _, states[path], _ = stepper.step(frames[t][None], states[path])
            times[path].append((time.perf_counter() - start) * 1e3)
    return {path: values[WARMUP:] for path, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="the FP32 export first, then its variants")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    times = lockstep_step_ms(args.models, args.steps, args.threads)
    base = statistics.median(times[args.models[0]])
    for path, values in times.items():
        median = statistics.median(values)
        print(json.dumps({"model": path, "precision": OnnxStepper(path).metadata.precision,
                          "step_ms_median": round(median, 2), "steps": len(values),
                          "ratio_to_first": round(median / base, 3)}))


if __name__ == "__main__":
    main()
