"""Long streams do not grow memory: thousands of steps with resets, streams leaving and joining,
and forecasts, and the process's resident memory stays flat after warm-up."""
import numpy as np
import pytest

from stae_deploy.runtime.machine import rss_mb
from stae_deploy.runtime.predictor import Predictor
from stae_deploy.stae_ref.footage import load_clip

WARMUP_STEPS = 500
MAX_GROWTH = 0.02            # RSS growth after warm-up, as a fraction


def churn(predictor: Predictor, frames: np.ndarray, steps: int) -> list[float]:
    """``steps`` steps of two streams with resets, a stream leaving and a new one joining every
    1000 steps and a 3-step forecast every 250; RSS (MB) sampled every 100 steps."""
    streams, samples = [predictor.new_stream(), predictor.new_stream()], []
    for step in range(steps):
        if step % 500 == 499:
            streams[0].reset()
        if step % 1000 == 999:
            streams[1].close()
            streams[1] = predictor.new_stream()
        horizon = 3 if step % 250 == 0 else 1
        active = streams if step % 5 else streams[:1]        # stream 1 misses every 5th frame
        results = predictor.step_many(active, [frames[(step + i * 7) % len(frames)]
                                               for i in range(len(active))], horizon)
        assert all(isinstance(r, np.ndarray) for r in results), f"step {step + 1}"
        if step % 100 == 99:
            samples.append(rss_mb())
    return samples


@pytest.mark.parametrize("steps", [pytest.param(3000, id="3000-steps"),
                                   pytest.param(10_000, id="10000-steps", marks=pytest.mark.slow)])
def test_memory_is_flat_over_long_streams(small_dynamic_onnx_path, steps):
    predictor = Predictor.load(small_dynamic_onnx_path)
    frames = load_clip("carphone", predictor.frame_hw)
    samples = churn(predictor, frames, steps)
    after_warmup = samples[WARMUP_STEPS // 100 - 1]
    growth = (max(samples[WARMUP_STEPS // 100:]) - after_warmup) / after_warmup
    assert growth < MAX_GROWTH, (f"RSS grew {growth:.1%} after warm-up over {steps} steps "
                                 f"({after_warmup:.1f} -> {max(samples):.1f} MB)")
