"""Where an onnxruntime step spends its kernel time, per op type (``stae bench --profile``).

The artifact is opened by :class:`stae_deploy.runtime.onnx_session.OnnxStepper` with onnxruntime's profiler
on (a pass of its own: profiling slows every node, so it never overlaps the timed run). The profile's ``Node`` events named
``*_kernel_time`` are summed per ``args.op_name``, leaving out the warm-up runs.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def op_time_share(path: str | Path, frames: Iterable[np.ndarray], batch: int, threads: int,
                  warmup: int, profile_prefix: Path) -> dict[str, float]:
    """Op type -> share of kernel time (fractions summing to 1, largest first) over the steps
    after ``warmup`` of stepping ``path`` on ``frames`` ((batch, 3, H, W) float32 each), state
    carried. The profile JSON is written next to ``profile_prefix``."""
    from stae_deploy.runtime.onnx_session import OnnxStepper

    def profiled(options) -> None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)

    stepper = OnnxStepper(path, threads=threads, configure=profiled)
    state = stepper.zero_state(batch)
    for frame in frames:
        _, state, _ = stepper.step(frame, state)
    events = json.loads(Path(stepper.session.end_profiling()).read_text())
    return kernel_time_share(events, skip_runs=warmup)


def kernel_time_share(events: list[dict[str, Any]], skip_runs: int = 0) -> dict[str, float]:
    """Op type -> share of the kernel time of onnxruntime profile ``events`` (largest first),
    counting only nodes that ran after the first ``skip_runs`` ``model_run`` events ended."""
    run_ends = sorted(e["ts"] + e["dur"] for e in events
                      if e.get("cat") == "Session" and e.get("name") == "model_run")
    after_us = run_ends[skip_runs - 1] if skip_runs else 0
    microseconds: dict[str, float] = defaultdict(float)
    for event in events:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= after_us):
            microseconds[event["args"]["op_name"]] += event["dur"]
    total = sum(microseconds.values())
    return {op: duration / total
            for op, duration in sorted(microseconds.items(), key=lambda item: -item[1])}
