"""Train a STAEConfig on real footage (MSE, Adam, cosine LR), resumably: what ``stae train`` runs.

Footage: registered clips, any video file (decoded once into a uint8 cache) and synthetic camera
motion over photos. Training frames only (``stae_deploy.stae_ref.training_data``): held-out
frames are never inputs or targets, and no sequence straddles a cut. Every ``val_every``
iterations the model is scored on the held-out frames (teacher-forced PSNR vs copy-last) and the
run is saved to ``RUN_DIR/last.pt`` (model, optimiser, RNG states, time spent), so a stopped run
resumes exactly; a loss and validation plot is redrawn beside it. At the end ``RUN_DIR/model.pt``
is a normal stae checkpoint whose metadata records the training config, command, seed,
validation log and what it was trained on (files, sha256, frame ranges, cuts, held-out split).

Devices: the CPU path is seeded and reproducible. On CUDA the step runs under bf16 autocast
with channels-last 3D tensors, optionally through ``torch.compile``.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from stae_deploy.runtime.errors import CheckpointError, ConfigError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.runtime.plots import save_panel_plot
from stae_deploy.stae_ref.checkpoint import save_checkpoint
from stae_deploy.stae_ref.config import STAEConfig, check_known_fields
from stae_deploy.stae_ref.evaluation import evaluate
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.training_data import (DEFAULT_HOLDOUT_FRACTION, SequenceSampler,
                                                training_videos)

STATE_FILE, LOG_FILE, MODEL_FILE, CONFIG_FILE = "last.pt", "log.jsonl", "model.pt", "train.json"
PLOT_FILE = "training.png"
LOSSES = ("mse", "psnr")
PSNR_LOSS_FLOOR_MSE = 1e-5        # 50 dB: identical crops do not send the log to -inf


def training_loss(name: str, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss over (B, S, 3, H, W) predictions and targets.

    "mse": the paper's mean squared error over everything. "psnr": the mean over frames of
    10 log10(frame MSE + 1e-5), i.e. minus the mean per-frame PSNR in dB, the figure evaluation
    reports. Plain MSE lets the large errors of fast pans dominate, so a model may buy a little
    on them with noise on near-static frames; the per-frame log weighs every frame's dB alike.
    """
    if name == "mse":
        return torch.nn.functional.mse_loss(predictions, targets)
    frame_mse = (predictions - targets).square().mean(dim=(2, 3, 4))            # (B, S)
    return 10.0 * torch.log10(frame_mse + PSNR_LOSS_FLOOR_MSE).mean()


@dataclass(frozen=True)
class TrainConfig:
    """clips: registered footage names. videos: video files (already expanded from folders and
    globs). synthetic_fraction: share of training sequences that are synthetic camera motion over
    photos (``stae_deploy.stae_ref.synthetic_motion``). holdout_fraction: last part of each clip
    and video never trained on.
    steps: teacher-forced steps per training sequence. crop: square crop, pixels (a multiple of
    the model's total stride). lr -> lr_min: cosine schedule over ``iterations``.
    loss: "mse" (the paper's) or "psnr" (see :func:`training_loss`).
    init_from: a checkpoint whose weights start the run (same parameter names and shapes, e.g.
    the same network with another cell update or head); None: seeded random initialisation.
    pause_probability: share of training sequences whose motion stops part-way (see
    :class:`~stae_deploy.stae_ref.training_data.SequenceSampler`).
    ema_decay: None, or keep an exponential moving average of the weights with this decay per
    iteration (0.995: about the last 200 iterations); validation and the final checkpoint then
    use the averaged weights, which do not swing with the last few batches.
    scales: more square frame sizes (pixels) at which the training videos are also cached and
    cropped, so that the network, which is fully convolutional, sees the motion of larger frames
    (a pan of 3 pixels per frame at 128x128 is 6 at 256x256); validation stays at the model's size.
    minutes: a time budget: the run ends after this many minutes of training (or ``iterations``,
    whichever comes first) and the learning rate follows the cosine over whichever is further
    along; for fine-tuning on a budget (not reproducible step for step, as time varies)."""

    model: STAEConfig
    clips: tuple[str, ...] = ("city", "carphone")
    videos: tuple[str, ...] = ()
    synthetic_fraction: float = 0.0
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    iterations: int = 3000
    batch: int = 8
    steps: int = 12
    crop: int = 96
    lr: float = 1e-3
    lr_min: float = 1e-4
    grad_clip: float = 1.0
    val_every: int = 250
    seed: int = 0
    loss: str = "mse"
    init_from: str | None = None
    pause_probability: float = 0.0
    ema_decay: float | None = None
    minutes: float | None = None
    scales: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "clips", tuple(self.clips))
        object.__setattr__(self, "scales", tuple(self.scales))
        for size in self.scales:
            if not isinstance(size, int) or size < self.crop or size % self.model.total_stride:
                raise ConfigError(f"scales: {size!r} is not a frame size >= crop {self.crop} and "
                                  f"a multiple of the total stride {self.model.total_stride}")
        object.__setattr__(self, "videos", tuple(str(v) for v in self.videos))
        if not self.clips and not self.videos and self.synthetic_fraction < 1.0:
            raise ConfigError("clips/videos: nothing to train on; name clips, pass --video "
                              "files, or set synthetic_fraction to 1")
        if not 0.0 <= self.synthetic_fraction <= 1.0:
            raise ConfigError(f"synthetic_fraction: expected in [0, 1], got "
                              f"{self.synthetic_fraction}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes: expected None or > 0, got {self.minutes}")
        for name in ("iterations", "batch", "steps", "crop", "val_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.crop % self.model.total_stride:
            raise ConfigError(f"crop: {self.crop} is not a multiple of the model's total stride "
                              f"{self.model.total_stride}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss: expected one of {LOSSES}, got {self.loss!r}")
        if not 0 < self.lr_min <= self.lr:
            raise ConfigError(f"lr/lr_min: need 0 < lr_min <= lr, got {self.lr} and {self.lr_min}")
        if not 0.0 <= self.pause_probability <= 1.0:
            raise ConfigError(f"pause_probability: expected in [0, 1], got "
                              f"{self.pause_probability}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay: expected None or in (0, 1), got {self.ema_decay}")

    def progress(self, iteration: int, elapsed_s: float = 0.0) -> float:
        """How far along the run is, in [0, 1]: iterations, or the time budget if further."""
        by_time = elapsed_s / (60.0 * self.minutes) if self.minutes is not None else 0.0
        return min(1.0, max(iteration / self.iterations, by_time))

    def lr_at(self, iteration: int, elapsed_s: float = 0.0) -> float:
        """Cosine decay from ``lr`` to ``lr_min`` over the run."""
        progress = self.progress(iteration, elapsed_s)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "model": self.model.to_dict(), "clips": list(self.clips),
                "videos": list(self.videos), "scales": list(self.scales)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        check_known_fields(cls, data, "training config")
        return cls(**{**data, "model": STAEConfig.from_dict(data["model"])})


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a
    ConfigError if CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:")
                                                 and name[5:].isdigit())):
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} asked for, but this torch sees no CUDA device "
                          f"(torch {torch.__version__}); use --device cpu or auto")
    return torch.device(name)


def train(config: TrainConfig, run_dir: str | Path, resume: bool = False,
          progress: bool = True, command: str = "", stop_after: int | None = None,
          threads: int | None = None, device: str = "cpu", compile_model: bool = False,
          log: Callable[[str], None] = tqdm.write) -> Path | None:
    """Train (or resume) into ``run_dir``; returns the final checkpoint's path, or None when
    ``stop_after`` iterations of this session ran first (the run is saved; resume it later).

    These arguments shape this session only, not the run (a resume may change them):
    ``command`` is recorded in the checkpoint's metadata; ``threads``: torch CPU threads
    (None: torch's default); ``device``: see :func:`resolve_device`; ``compile_model``: run the
    training rollout through ``torch.compile``. Footage is decoded (or found in the cache) and
    checked before the first iteration."""
    if stop_after is not None and stop_after < 1:
        raise ConfigError(f"stop_after: expected None or >= 1 iterations, got {stop_after}")
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads: expected None or >= 1, got {threads}")
        torch.set_num_threads(threads)
    run_dir = Path(run_dir)
    state_path, config_path = run_dir / STATE_FILE, run_dir / CONFIG_FILE
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise CheckpointError(f"{run_dir} already holds a run; pass --resume to continue it or "
                              f"choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume and config_path.exists():
        saved = TrainConfig.from_dict(json.loads(config_path.read_text()))
        if saved != config:
            raise ConfigError(f"{config_path}: the run was started with another config; resume "
                              f"with the same options (differences would silently change it)")
    videos = training_videos(config.clips, config.videos, config.model.frame_size,
                             config.holdout_fraction, config.steps + 1, log=log if progress else None)
    rescaled = [video for size in config.scales
                for video in training_videos(config.clips, config.videos, (size, size),
                                             config.holdout_fraction, config.steps + 1)]
    sampler = SequenceSampler([video.shots() for video in videos + rescaled], config.steps,
                              config.crop,
                              config.pause_probability, _synthetic_motion(config),
                              config.synthetic_fraction)
    validation = [video.held_out_split() for video in videos]
    config_path.write_text(json.dumps(config.to_dict(), indent=2))
    torch.manual_seed(config.seed)
    model = STAE(config.model)
    if config.init_from is not None:
        model.load_state_dict(initial_weights(config.init_from, model))
    target = resolve_device(device)
    on_cuda = target.type == "cuda"
    model.to(target, memory_format=torch.channels_last_3d) if on_cuda else model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    averaged = None if config.ema_decay is None else copy.deepcopy(model)
    scored = model if averaged is None else averaged       # validated and saved
    rng = np.random.default_rng(config.seed)
    iteration, history, elapsed_s = 0, [], 0.0
    if resume and state_path.exists():
        saved_state = torch.load(state_path, weights_only=False, map_location=target)
        model.load_state_dict(saved_state["model"])
        if averaged is not None:
            averaged.load_state_dict(saved_state["averaged_model"])
        optimizer.load_state_dict(saved_state["optimizer"])
        rng.bit_generator.state = saved_state["numpy_rng"]
        torch.set_rng_state(saved_state["torch_rng"].cpu())
        iteration, history = saved_state["iteration"], saved_state["log"]
        elapsed_s = saved_state.get("elapsed_s", 0.0)
    rollout = torch.compile(model.rollout) if compile_model else model.rollout
    budgeted = config.minutes is not None     # a time budget: the bar counts seconds, the ETA
    bar = tqdm(total=round(60 * config.minutes) if budgeted else config.iterations,
               initial=round(elapsed_s) if budgeted else iteration, desc="train",
               unit="s" if budgeted else "it", disable=not progress)
    loss_window: list[float] = []
    session_end = config.iterations if stop_after is None else min(config.iterations,
                                                                  iteration + stop_after)

    def finished() -> bool:
        return config.progress(iteration, elapsed_s) >= 1.0

    while iteration < session_end and not finished():
        started = time.perf_counter()
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(iteration, elapsed_s)
        clips = torch.from_numpy(sampler.sample(rng, config.batch)).to(target)  # (B, S+1, 3, c, c)
        loss_window.append(training_step(model, optimizer, clips, config, rollout, on_cuda))
        if averaged is not None:
            update_average(averaged, model, config.ema_decay)
        iteration += 1
        elapsed_s += time.perf_counter() - started
        bar.update(min(bar.total, round(elapsed_s)) - bar.n if budgeted else 1)
        if iteration % config.val_every == 0 or iteration == session_end or finished():
            entry = _validate(scored, validation, config, iteration, elapsed_s, loss_window)
            history.append(entry)
            loss_window = []
            bar.set_postfix(iteration=iteration, loss=f"{entry['train_loss']:.5f}",
                            gain_db=f"{entry['val_model_psnr_db'] - entry['val_copy_last_psnr_db']:+.2f}")
            with open(run_dir / LOG_FILE, "a") as handle:
                handle.write(json.dumps(entry) + "\n")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        **({} if averaged is None else {"averaged_model": averaged.state_dict()}),
                        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                        "iteration": iteration, "log": history, "elapsed_s": elapsed_s},
                       state_path.with_suffix(".partial"))
            state_path.with_suffix(".partial").replace(state_path)
            save_training_plot(history, run_dir / PLOT_FILE)
    bar.close()
    if not finished():
        return None
    final = run_dir / MODEL_FILE
    initialised = {"init_from_sha256": sha256_file(config.init_from)} if config.init_from else {}
    save_checkpoint(scored.eval().cpu(), final, force=True, metadata={
        "train_config": config.to_dict(), "command": command, "seed": config.seed, **initialised,
        "device": str(target), "training_minutes": round(elapsed_s / 60.0, 2),
        "held_out": {v.name: [v.holdout_start - v.usable[0], v.usable[1] - v.usable[0]]
                     for v in videos},
        "trained_on": [v.provenance() for v in videos], "log": history})
    return final


def training_step(model: STAE, optimizer: torch.optim.Optimizer, clips: torch.Tensor,
                  config: TrainConfig, rollout: Callable[..., Any] | None = None,
                  bf16: bool = False) -> float:
    """One optimiser step on ``clips`` (B, S+1, 3, c, c): predict frames 1..S teacher-forced from
    frames 0..S-1, the loss, clipped gradients. ``rollout``: the model's (or a compiled) rollout;
    ``bf16``: CUDA bf16 autocast. Returns the loss."""
    rollout = rollout or model.rollout
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        steps = rollout(clips[:, :-1], horizon=1)
        predictions = torch.cat([steps.warmup_predictions, steps.forecast], dim=1)
        loss = training_loss(config.loss, predictions.float(), clips[:, 1:])
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item()


def _synthetic_motion(config: TrainConfig) -> Any:
    """The synthetic camera-motion source, or None when the run uses none."""
    if not config.synthetic_fraction:
        return None
    from stae_deploy.stae_ref.synthetic_motion import SyntheticMotion, load_photos

    return SyntheticMotion(load_photos())


def _validate(model: STAE, validation: list, config: TrainConfig, iteration: int,
              elapsed_s: float, losses: list[float]) -> dict[str, Any]:
    """One log entry: mean training loss since the last entry and the held-out scores (on a CPU
    copy of the model when it trains elsewhere)."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    report = evaluate(model if on_cpu else copy.deepcopy(model).float().cpu(), validation,
                      horizons=0, with_ssim=False)
    return {"iteration": iteration, "train_loss": float(np.mean(losses)),
            "lr": config.lr_at(iteration, elapsed_s), "time": time.time(),
            "elapsed_s": round(elapsed_s, 1),
            "val_model_psnr_db": report["model_psnr_db"],
            "val_copy_last_psnr_db": report["copy_last_psnr_db"],
            "val_per_clip_gain_db": {k: v["gain_db"] for k, v in report["per_clip"].items()}}


def save_training_plot(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and held-out gain over copy-last (dB) per validation, as a PNG."""
    gains = {"all held-out frames": [e["val_model_psnr_db"] - e["val_copy_last_psnr_db"]
                                     for e in history]}
    for name in history[-1]["val_per_clip_gain_db"]:
        gains[name] = [e["val_per_clip_gain_db"].get(name, float("nan")) for e in history]
    every = history[0]["iteration"] if history else 1
    return save_panel_plot(path, {
        "training loss": ("loss", {"train": [e["train_loss"] for e in history]}),
        "held-out gain over copy-last": ("dB", gains)},
        f"validation (about every {every} iterations)")


@torch.no_grad()
def update_average(averaged: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """averaged <- decay * averaged + (1 - decay) * model, parameter by parameter (buffers are
    copied)."""
    for mean, current in zip(averaged.parameters(), model.parameters()):
        mean.mul_(decay).add_(current, alpha=1.0 - decay)
    for mean, current in zip(averaged.buffers(), model.buffers()):
        mean.copy_(current)


def initial_weights(path: str, model: STAE) -> dict[str, torch.Tensor]:
    """The weights of checkpoint ``path`` if they fit ``model`` exactly; a CheckpointError
    naming the first mismatching parameter otherwise."""
    from stae_deploy.stae_ref.checkpoint import load_checkpoint

    source, _ = load_checkpoint(path)
    weights, wanted = source.state_dict(), model.state_dict()
    for name, tensor in wanted.items():
        if name not in weights or weights[name].shape != tensor.shape:
            found = tuple(weights[name].shape) if name in weights else "nothing"
            raise CheckpointError(f"init_from {path}: parameter '{name}' is {found}, the model "
                                  f"to train needs {tuple(tensor.shape)}")
    return {name: weights[name] for name in wanted}
