"""``stae calibrate``: record every graph input of an FP32 model along real rollouts.

    stae calibrate MODEL.onnx -o calib.npz [--clips city carphone motion] [--video my.mp4 ...]

Each source (the training frames of a footage clip, or a user's video) is played forward then
backward for ``--steps-per-source`` steps, so the recurrent state reaches its steady-state range
(a model's memory can take a hundred steps to settle; calibrating on the first steps alone
clips it), and the first steps from a zero state are sampled too (every stream and every reset
starts there). After ``--warmup`` steps, every ``--every``-th step's inputs (the frame and each state
tensor, exactly as the model sees them) are kept. Held-out frames of the footage clips are never
recorded, so `stae drift` measures on frames calibration never saw. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stae_deploy.calibration.calib_data import CalibrationInfo, TensorRange, save_calibration
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite, sha256_file
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.runtime.state_ranges import StateRanges
from stae_deploy.stae_ref.footage import CORE_CLIPS, clip_source, forward_backward, read_frames
from stae_deploy.stae_ref.training_data import DEFAULT_HOLDOUT_FRACTION, split_clips


@dataclass(frozen=True)
class CalibrationSettings:
    """What ``stae calibrate`` plays and samples: the training frames of the footage ``clips``
    and the user's ``videos``, each for ``steps_per_source`` steps (forward, then backward); after
    ``warmup`` steps, every ``every``-th step's inputs are kept."""

    clips: tuple[str, ...] = CORE_CLIPS
    videos: tuple[str, ...] = ()
    steps_per_source: int = 240
    warmup: int = 0
    every: int = 6

    def __post_init__(self) -> None:
        for name in ("clips", "videos"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigError(f"{name}: expected a list of names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not self.clips and not self.videos:
            raise ConfigError("clips/videos: give at least one source of frames")
        for clip in self.clips:
            clip_source(clip)                   # raises FootageError naming an unknown clip
        if self.steps_per_source < 1:
            raise ConfigError(f"steps_per_source: expected >= 1, got {self.steps_per_source}")
        check_sampling(self.warmup, self.every)


def check_sampling(warmup: int, every: int) -> None:
    """Raise ConfigError unless ``warmup`` >= 0 steps and ``every`` >= 1."""
    if warmup < 0 or every < 1:
        raise ConfigError(f"warmup/every: need warmup >= 0 and every >= 1, got {warmup}, {every}")


def calibration_streams(frame_size: tuple[int, int], clips: tuple[str, ...],
                        videos: tuple[str, ...], steps: int,
                        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
                        ) -> dict[str, np.ndarray]:
    """Source name -> (steps, 3, H, W) float32 frames: clips' training frames and user videos,
    each played forward then backward."""
    streams = {split.name: forward_backward(split.train_frames, steps)
               for split in split_clips(clips, frame_size, holdout_fraction)}
    for video in videos:
        frames = np.stack(list(read_frames(video, frame_size, stop=steps)))
        streams[Path(video).name] = forward_backward(frames, steps)
    return streams


def record_calibration(model_path: str | Path, streams: dict[str, np.ndarray], warmup: int,
                       every: int, progress: bool = True
                       ) -> tuple[dict[str, np.ndarray], CalibrationInfo]:
    """Run the FP32 model over each stream from a zero state; return the graph inputs of every
    ``every``-th step after ``warmup`` steps, stacked on axis 0, and their provenance."""
    check_sampling(warmup, every)
    stepper = OnnxStepper(model_path)
    if stepper.metadata.precision != "fp32":
        raise ConfigError(f"{model_path}: precision is {stepper.metadata.precision}; calibrate "
                          f"with the fp32 export (calibration records the exact FP32 states)")
    spec, frame_name = stepper.spec, stepper.spec.frame.name
    recorded: dict[str, list[np.ndarray]] = {t.name: [] for t in spec.inputs}
    total = sum(len(frames) for frames in streams.values())
    bar = tqdm(total=total, desc="calibrate", unit="step", disable=not progress)
    for frames in streams.values():
        state = stepper.zero_state(1)
        for t, frame in enumerate(frames):
            if t >= warmup and (t - warmup) % every == 0:
                recorded[frame_name].append(frame[None].astype(np.float32))
                for name, value in state.items():
                    recorded[name].append(value)
            _, state, _ = stepper.step(frame[None], state)
            bar.update(1)
    bar.close()
    tensors = {name: np.concatenate(values) for name, values in recorded.items()}
    info = CalibrationInfo(
        model_sha256=sha256_file(model_path), protocol=spec.to_dict(),
        samples=len(tensors[frame_name]), warmup_steps=warmup, sample_every=every,
        sources={name: len(frames) for name, frames in streams.items()},
        ranges={name: TensorRange.of(values) for name, values in tensors.items()})
    return tensors, info


def record_state_ranges(model: str | Path | OnnxArtifact, streams: dict[str, np.ndarray],
                        progress: bool = True) -> StateRanges:
    """The (min, max) each state input of the FP32 ``model`` takes when it runs over each of
    ``streams`` (name -> (steps, 3, H, W) frames) from a zero state: what ``stae export``
    stores for the runtime's range guard when there is no calibration."""
    stepper = OnnxStepper(model)
    names = [pair.input.name for pair in stepper.spec.state]
    low = dict.fromkeys(names, 0.0)                  # every stream starts from the zero state
    high = dict.fromkeys(names, 0.0)
    bar = tqdm(total=sum(map(len, streams.values())), desc="state ranges", unit="step",
               disable=not progress)
    for frames in streams.values():
        state = stepper.zero_state(1)
        for frame in frames:
            _, state, _ = stepper.step(frame[None], state)
            for name, value in state.items():
                low[name] = min(low[name], float(value.min()))
                high[name] = max(high[name], float(value.max()))
            bar.update(1)
    bar.close()
    steps = ", ".join(f"{len(frames)} steps of {name}" for name, frames in streams.items())
    return StateRanges(f"export rollout: {steps}", {name: (low[name], high[name]) for name in names})


def record_calibration_file(model_path: str | Path, output: str | Path,
                            settings: CalibrationSettings, force: bool = False,
                            progress: bool = True) -> tuple[Path, CalibrationInfo]:
    """Record the calibration inputs of the fp32 model ``model_path`` as ``settings`` says and
    save them to ``output`` (.npz, plus its .json info); returns (output, info). Refuses to
    overwrite ``output`` unless ``force``."""
    from stae_deploy.runtime.onnx_session import open_session

    output = refuse_overwrite(output, force)
    _, metadata = open_session(model_path)
    height, width = metadata.spec.data_inputs[0].shape[2:]
    streams = calibration_streams((height, width), settings.clips, settings.videos,
                                  settings.steps_per_source)
    tensors, info = record_calibration(model_path, streams, settings.warmup, settings.every,
                                       progress)
    save_calibration(output, tensors, info)
    return output, info
