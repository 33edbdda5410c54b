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

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from stae_deploy.calibration.calib_data import CalibrationInfo, TensorRange, info_path, save_calibration
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.runtime.files import refuse_overwrite, sha256_file
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.stae_ref.footage import CLIPS, forward_backward, read_frames
from stae_deploy.stae_ref.training_data import DEFAULT_HOLDOUT_FRACTION, split_clips


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
    if warmup < 0 or every < 1:
        raise ConfigError(f"warmup/every: need warmup >= 0 and every >= 1, got {warmup}, {every}")
    stepper = OnnxStepper(model_path)
    if stepper.metadata.precision != "fp32":
        raise ConfigError(f"{model_path}: precision is {stepper.metadata.precision}; calibrate "
                          f"with the fp32 export (calibration records the exact FP32 states)")
    spec, frame_name = stepper.spec, stepper.spec.data_inputs[0].name
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the fp32 ONNX model exported by `stae export`")
    parser.add_argument("--output", "-o", required=True, help="calibration file to write (.npz)")
    parser.add_argument("--clips", nargs="*", default=sorted(CLIPS),
                        help="footage clips whose training frames are played")
    parser.add_argument("--video", nargs="*", default=[], help="your own video files")
    parser.add_argument("--steps-per-source", type=int, default=240,
                        help="steps played per clip/video (forward, then backward)")
    parser.add_argument("--warmup", type=int, default=0,
                        help="steps before the first sample (0: the start of a stream, from a "
                             "zero state, is calibrated too; every stream starts there)")
    parser.add_argument("--every", type=int, default=6, help="keep every N-th step after warm-up")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.runtime.onnx_session import open_session

    output = refuse_overwrite(args.output, args.force)
    if not args.clips and not args.video:
        raise ConfigError("--clips/--video: give at least one source of frames")
    _, metadata = open_session(args.model)
    height, width = metadata.spec.data_inputs[0].shape[2:]
    streams = calibration_streams((height, width), tuple(args.clips), tuple(args.video),
                                  args.steps_per_source)
    tensors, info = record_calibration(args.model, streams, args.warmup, args.every)
    save_calibration(output, tensors, info)
    print(f"{info.samples} samples from {', '.join(info.sources)} -> {output} "
          f"({output.stat().st_size / 2**20:.0f} MB) and {info_path(output)}", file=sys.stderr)
    print(f"{'tensor':<16}{'min':>10}{'max':>10}{'|max|':>10}{'|p99.99|':>10}")
    for name, span in info.ranges.items():
        print(f"{name:<16}{span.min:>10.3f}{span.max:>10.3f}{span.abs_max:>10.3f}"
              f"{span.abs_p9999:>10.3f}")
    return 0
