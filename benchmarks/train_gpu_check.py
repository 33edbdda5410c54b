"""Training on a GPU, prepared for a lent device: steps/s at 256 and 512, and CUDA vs CPU losses.

    python -m stae_deploy.benchmarks.train_gpu_check [--config CFG.json] [--steps 20]
        [--sizes 256 512] [--batch 8] [--compile] [--parity-steps 3]

1. Parity: the same seeded model, optimiser and batches (real city frames) stepped
   ``--parity-steps`` times on the CPU and on CUDA in FP32 with TF32 off; the losses must agree
   to 1e-4 relative, and the bf16-autocast losses to 2e-2 (bf16 keeps 8 bits of mantissa).
2. Speed: training steps/s (``stae_deploy.stae_ref.train.training_step``: rollout, loss, clipped
   Adam step) at each size, batch 8, bf16 autocast and channels-last, median of ``--steps``
   after 3 warm-up steps, optionally through ``torch.compile``; peak CUDA memory.

Prints one JSON line per result. Needs a CUDA device; without one it says so and exits 0 with
``"status": "not run here"``, so the script itself can be checked on any machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch

from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.footage import load_clip
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.train import TrainConfig, training_step

WARMUP_STEPS = 3
FP32_LOSS_RTOL, BF16_LOSS_RTOL = 1e-4, 2e-2


def city_batches(size: int, batch: int, steps: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` batches (B, steps + 1, 3, size, size) of consecutive city frames at ``size``."""
    frames = load_clip("city", (size, size))
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(frames) - steps - 1, (count, batch))
    return [torch.from_numpy(np.stack([frames[s:s + steps + 1] for s in row])) for row in starts]


def losses_on(device: str, config: TrainConfig, batches: list[torch.Tensor], bf16: bool,
              seed: int = 0) -> list[float]:
    """The losses of ``len(batches)`` training steps from a seeded model on ``device``."""
    torch.manual_seed(seed)
    model = STAE(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    return [training_step(model, optimizer, clips.to(device), config, bf16=bf16)
            for clips in batches]


def steps_per_s(config: TrainConfig, size: int, batch: int, steps: int,
                compile_model: bool) -> dict[str, float]:
    """Median training steps/s at ``size`` on CUDA (bf16 autocast, channels-last) and peak MiB."""
    model = STAE(config.model).to("cuda", memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rollout = torch.compile(model.rollout) if compile_model else model.rollout
    batches = city_batches(size, batch, config.steps, WARMUP_STEPS + steps)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for index, clips in enumerate(batches):
        clips = clips.to("cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        training_step(model, optimizer, clips, config, rollout, bf16=True)
        torch.cuda.synchronize()
        if index >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return {"steps_per_s": round(1.0 / statistics.median(times), 3),
            "peak_cuda_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="STAEConfig JSON (default: the paper's)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per size")
    parser.add_argument("--parity-steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"status": "not run here", "reason": "no CUDA device visible to torch "
                          f"{torch.__version__}"}))
        return 0
    torch.backends.cuda.matmul.allow_tf32 = False        # parity: full FP32 on both sides
    torch.backends.cudnn.allow_tf32 = False
    model_config = STAEConfig.load(args.config) if args.config else STAEConfig()
    small = TrainConfig(model=model_config, batch=2, steps=6, crop=128)   # fully convolutional
    batches = city_batches(128, 2, 6, args.parity_steps)
    cpu = losses_on("cpu", small, batches, bf16=False)
    for name, bf16, rtol in (("fp32", False, FP32_LOSS_RTOL), ("bf16", True, BF16_LOSS_RTOL)):
        cuda = losses_on("cuda", small, copy.deepcopy(batches), bf16=bf16)
        worst = max(abs(a - b) / abs(a) for a, b in zip(cpu, cuda))
        print(json.dumps({"check": f"cuda_{name}_loss_vs_cpu", "cpu": cpu, "cuda": cuda,
                          "max_relative_difference": worst, "tolerance": rtol,
                          "ok": worst <= rtol}), flush=True)
    for size in args.sizes:
        config = TrainConfig(model=model_config, batch=args.batch, crop=size)
        print(json.dumps({"size": size, "batch": args.batch, "compile": args.compile,
                          "device": torch.cuda.get_device_name(),
                          **steps_per_s(config, size, args.batch, args.steps, args.compile)}),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
