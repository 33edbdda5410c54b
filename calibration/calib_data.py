"""The calibration file: every graph input at sampled rollout steps, batch-stacked on axis 0.

``calib.npz`` holds one array per graph input, named as in the model's state protocol, shaped
``(samples * batch, ...)``: ModelOpt's layout (it splits axis 0 into the model's batch). Next to
it, ``calib.npz.json`` records where the samples came from, the model they were recorded with and
each tensor's range. Both are checked against a model's protocol before use, so a calibration
file recorded for another model is refused naming the tensor.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from stae_deploy.runtime.errors import CalibrationError
from stae_deploy.runtime.files import atomic_path
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec
from stae_deploy.runtime.state_ranges import StateRanges


@dataclass(frozen=True)
class TensorRange:
    """Summary of one recorded tensor: min, max, max |x| and the 99.99th percentile of |x|."""

    min: float
    max: float
    abs_max: float
    abs_p9999: float

    @classmethod
    def of(cls, values: np.ndarray) -> "TensorRange":
        magnitude = np.abs(values)
        return cls(float(values.min()), float(values.max()), float(magnitude.max()),
                   float(np.percentile(magnitude, 99.99)))


@dataclass(frozen=True)
class CalibrationInfo:
    """Provenance of a calibration file. ``sources``: footage name -> steps recorded from it."""

    model_sha256: str
    protocol: Mapping[str, Any]
    samples: int
    warmup_steps: int
    sample_every: int
    sources: Mapping[str, int]
    ranges: Mapping[str, TensorRange] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ranges": {k: asdict(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CalibrationInfo":
        return cls(**{**data, "ranges": {k: TensorRange(**v) for k, v in data["ranges"].items()}})


def calibration_state_ranges(info: CalibrationInfo, spec: IOSpec) -> StateRanges:
    """The (min, max) calibration saw of each state input of ``spec``, as the artifact carries
    them."""
    sources = ", ".join(info.sources)
    return StateRanges(f"calibration: {info.samples} samples of {sources}",
                       {pair.input.name: (info.ranges[pair.input.name].min,
                                          info.ranges[pair.input.name].max)
                        for pair in spec.state if pair.input.name in info.ranges})


def info_path(npz_path: str | Path) -> Path:
    """``calib.npz`` -> ``calib.npz.json``."""
    return Path(str(npz_path) + ".json")


def load_calibration_info(npz_path: str | Path) -> CalibrationInfo | None:
    """The provenance recorded next to a calibration file; None when there is none (a file
    written by other tools)."""
    path = info_path(npz_path)
    if not path.is_file():
        return None
    try:
        return CalibrationInfo.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as err:
        raise CalibrationError(f"{path}: not a calibration record written by `stae calibrate`: "
                               f"{err}") from None


def save_calibration(path: str | Path, tensors: Mapping[str, np.ndarray],
                     info: CalibrationInfo) -> None:
    """Write the tensors (name -> (N, ...)) to ``path`` and the info next to it, each under a
    partial name until complete (the info last: a record without its info is refused)."""
    with atomic_path(Path(path), keep_suffix=True) as partial:
        np.savez(partial, **tensors)
    with atomic_path(info_path(path)) as partial:
        partial.write_text(json.dumps(info.to_dict(), indent=2))


def load_calibration(path: str | Path, spec: IOSpec) -> dict[str, np.ndarray]:
    """The calibration tensors of ``path``, checked against the model's protocol ``spec``.

    Every graph input must be present with the protocol's per-sample shape and dtype, and a
    sample count that is a multiple of the model's static batch. Raises CalibrationError naming
    the file and tensor otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: no such calibration file (record one with `stae calibrate`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            tensors = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as err:
        raise CalibrationError(f"{path}: not a readable .npz calibration file: {err}") from None
    check_against_protocol(tensors, spec, str(path))
    return tensors


def check_against_protocol(tensors: Mapping[str, np.ndarray], spec: IOSpec, source: str) -> None:
    """Raise CalibrationError unless ``tensors`` are exactly the graph inputs of ``spec``."""
    expected = [t.name for t in spec.inputs]
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise CalibrationError(f"{source}: tensors do not match the model's inputs {expected}: "
                               f"missing {missing}, unexpected {extra}")
    counts = {len(tensors[name]) for name in expected}
    if len(counts) != 1:
        raise CalibrationError(f"{source}: tensors hold different sample counts "
                               f"{ {n: len(tensors[n]) for n in expected} }")
    count = counts.pop()
    for tensor in spec.inputs:
        array = tensors[tensor.name]
        if array.shape[1:] != tensor.per_sample_shape or str(array.dtype) != tensor.dtype:
            raise CalibrationError(
                f"{source}: tensor '{tensor.name}' is {array.dtype} {tuple(array.shape[1:])} per "
                f"sample; the model expects {tensor.dtype} {tensor.per_sample_shape}")
    if spec.batch != DYNAMIC_BATCH and (count == 0 or count % int(spec.batch)):
        raise CalibrationError(f"{source}: {count} samples are not a positive multiple of the "
                               f"model's batch {spec.batch}")


def batches(tensors: Mapping[str, np.ndarray], spec: IOSpec) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of the model's batch size (1 for a dynamic batch) over the stacked samples."""
    batch = 1 if spec.batch == DYNAMIC_BATCH else int(spec.batch)
    count = len(next(iter(tensors.values())))
    for start in range(0, count, batch):
        yield {name: array[start:start + batch] for name, array in tensors.items()}
