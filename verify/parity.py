"""Parity of an ONNX artifact with the PyTorch reference, step after step, tensor by tensor.

A rollout of ``steps`` teacher-forced steps (real frames in, each side carrying its own state)
then ``horizon - 1`` closed-loop steps (each side fed its own prediction). Every output and every
next-state is compared at every step against a per-tensor tolerance table. Closed loops amplify
any difference, so their errors are reported next to a chaos baseline: the reference against
itself with 1e-6 noise on the input frames.

Step-1 bounds are grounded in FP32 noise (:func:`fp32_noise`): an FP32 step has no unique
result, and the reference's own FP32 result moves when a reduction is summed in another,
equally legitimate order. The FP32 table bounds each tensor by ``noise_factor`` times what the
reference moves by, never below the table's floor (:meth:`ToleranceTable.grounded`).

The reference is the PyTorch model (:class:`TorchReference`), or, for a precision variant whose
weights cannot be rebuilt (a checkpoint not at hand), the FP32 graph it was made from
(:class:`OnnxReference`): what matters for FP16 and INT8 is how far they are from FP32.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.metrics import psnr_db
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.stae_ref.model import STAE

CHAOS_NOISE = 1e-6
# Float32 running sums of the vectorised reduction that FP32 noise is measured with (fp32_noise).
NOISE_LANES = 8


class StepReference(Protocol):
    """What a rollout is compared against: numpy in, numpy out, state keyed by input name."""

    label: str

    def zero_state(self) -> dict[str, np.ndarray]:
        """The zero state at batch 1."""
        ...

    def step(self, frame: np.ndarray, state: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """frame (1, 3, H, W) float32 -> (prediction (1, 3, H, W), next state)."""
        ...


class TorchReference:
    """The PyTorch reference model as a :class:`StepReference`."""

    label = "PyTorch reference"

    def __init__(self, model: STAE):
        self.model = model

    def zero_state(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.model.zero_state().items()}

    @torch.no_grad()
    def step(self, frame: np.ndarray, state: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        prediction, next_state = self.model.step(
            torch.from_numpy(np.ascontiguousarray(frame, dtype=np.float32)),
            {k: torch.from_numpy(v) for k, v in state.items()})
        return prediction.numpy(), {k: v.numpy() for k, v in next_state.items()}

    def fp32_variants(self, frame: np.ndarray, state: dict[str, np.ndarray]
                      ) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The same step computed other legitimate FP32 ways (see :func:`fp32_noise`): every
        GroupNorm's statistics summed by :func:`lane_sum`, over its elements in order and
        reversed."""
        results = []
        for reverse in (False, True):
            hooks = [module.register_forward_hook(_lane_summed_group_norm(reverse))
                     for module in self.model.modules() if isinstance(module, nn.GroupNorm)]
            try:
                results.append(self.step(frame, state))
            finally:
                for hook in hooks:
                    hook.remove()
        return results


def lane_sum(x: np.ndarray, lanes: int = NOISE_LANES) -> np.ndarray:
    """Sum float32 ``x`` over its last axis as a vectorised kernel does: element i is added to
    the float32 running sum ``i % lanes``, then the lanes are added in order. (..., n) -> (..., 1).

    8 lanes is Eigen's reduction on SSE and NEON (two 4-wide registers), which onnxruntime's CPU
    InstanceNormalization is; TensorRT's tree reductions are more accurate."""
    pad = (-x.shape[-1]) % lanes
    if pad:
        x = np.concatenate([x, np.zeros((*x.shape[:-1], pad), x.dtype)], axis=-1)
    running = np.cumsum(x.reshape(*x.shape[:-1], -1, lanes), axis=-2, dtype=np.float32)
    return np.cumsum(running[..., -1, :], axis=-1, dtype=np.float32)[..., -1:]


def _lane_summed_group_norm(reverse: bool):
    """A forward hook replacing a GroupNorm's output by the same normalisation with its mean and
    variance (two passes: the mean, then the centred squares) summed by :func:`lane_sum`."""
    def hook(norm: nn.GroupNorm, args: tuple[torch.Tensor, ...], _output: torch.Tensor
             ) -> torch.Tensor:
        x = args[0]
        groups = x.detach().numpy().reshape(x.shape[0], norm.num_groups, -1)
        order = groups[..., ::-1] if reverse else groups
        count = np.float32(groups.shape[-1])
        mean = lane_sum(order) / count
        variance = lane_sum(np.square(order - mean)) / count
        normalised = (groups - mean) / np.sqrt(variance + np.float32(norm.eps))
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (torch.from_numpy(normalised).reshape(x.shape) * norm.weight.view(shape)
                + norm.bias.view(shape))
    return hook


class OnnxReference:
    """An FP32 ONNX artifact as the :class:`StepReference` of its precision variants."""

    def __init__(self, path: str | Path):
        self.stepper = OnnxStepper(path)
        if self.stepper.metadata.precision != "fp32":
            raise ArtifactError(f"{path}: precision is {self.stepper.metadata.precision}; a "
                                f"reference graph must be fp32")
        self.label = f"FP32 graph {Path(path).name}"

    def zero_state(self) -> dict[str, np.ndarray]:
        return self.stepper.zero_state()

    def step(self, frame: np.ndarray, state: dict[str, np.ndarray]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        prediction, next_state, _ = self.stepper.step(frame, state)
        return prediction, next_state


@dataclass(frozen=True)
class ToleranceTable:
    """Pass criteria of one precision.

    step1_max_rel:    default bound on max|onnx - ref| / max(1, max|ref|) at step 1, per tensor;
                      with noise_factor, the floor of the noise-grounded bounds.
    per_tensor:       overrides of that bound by output name (kept as given by :meth:`grounded`).
    pred_psnr_db_min: bound on the prediction's PSNR vs the reference at every teacher-forced step.
    noise_factor:     where set, a tensor's step-1 bound is max(step1_max_rel, noise_factor x its
                      measured FP32 noise) (:func:`fp32_noise`; a PyTorch reference is needed).
    """

    step1_max_rel: float
    pred_psnr_db_min: float
    per_tensor: Mapping[str, float] = field(default_factory=dict)
    noise_factor: float | None = None

    def limit(self, tensor: str) -> float:
        return self.per_tensor.get(tensor, self.step1_max_rel)

    def grounded(self, tensors: list[str], noise: Mapping[str, float]
                 ) -> tuple[ToleranceTable, dict[str, dict[str, Any]]]:
        """The step-1 bound of every tensor given its measured FP32 noise (empty: not measured).

        Returns this table with every bound in ``per_tensor``, and per tensor
        {limit, source, fp32_noise}; source is "per_tensor" (set explicitly, e.g. ``--tol``),
        "floor" (step1_max_rel) or "fp32 noise x k"."""
        limits = {}
        for tensor in tensors:
            measured = noise.get(tensor)
            if tensor in self.per_tensor:
                limit, source = self.per_tensor[tensor], "per_tensor"
            elif (self.noise_factor is not None and measured is not None
                  and self.noise_factor * measured > self.step1_max_rel):
                limit, source = self.noise_factor * measured, f"fp32 noise x {self.noise_factor:g}"
            else:
                limit, source = self.step1_max_rel, "floor"
            limits[tensor] = {"limit": limit, "source": source, "fp32_noise": measured}
        table = replace(self, per_tensor={t: entry["limit"] for t, entry in limits.items()})
        return table, limits

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_tensor": dict(self.per_tensor)}


# Per precision: what "predicts what the reference predicts" means.
TOLERANCES: dict[str, ToleranceTable] = {
    # Step 1 bounded by 4x the measured FP32 noise (fp32_noise), at least 1e-4: the
    # noise of two summation orders differs by up to 3.5x, and a 4-lane reduction is ~2.5x noisier.
    "fp32": ToleranceTable(step1_max_rel=1e-4, pred_psnr_db_min=60.0, noise_factor=4.0),
    "fp16": ToleranceTable(step1_max_rel=2e-2, pred_psnr_db_min=40.0),
    # A sanity gate on the prediction (a broken Q/DQ graph fails it). Single state elements can
    # be off by a whole quantisation step of their consumer, so no per-element state bound;
    # INT8's real bounds are over long streams, relative to the FP32 model: `stae drift`.
    "int8": ToleranceTable(step1_max_rel=float("inf"), pred_psnr_db_min=40.0,
                           per_tensor={"prediction": 5e-2}),
}


@dataclass
class ParityReport:
    """Errors of one rollout. Steps are numbered from 1; "rel" is max abs / max(1, max|ref|)."""

    precision: str
    reference: str                        # what it was compared against (StepReference.label)
    steps: int
    horizon: int
    tolerances: ToleranceTable
    max_abs: dict[str, float]             # tensor -> worst over teacher-forced steps
    max_rel: dict[str, float]             # tensor -> worst over teacher-forced steps
    step1_max_rel: dict[str, float]       # tensor -> at step 1
    step1_limits: dict[str, dict[str, Any]]   # tensor -> {limit, source, fp32_noise}
    worst: dict[str, Any]                 # {step, tensor, value (rel), abs}
    pred_psnr_db: list[float]             # per teacher-forced step
    state_rel_per_step: list[float]       # worst state tensor's rel error per step
    closed_loop: dict[str, list[float]]   # per horizon step: onnx vs ref, and chaos vs ref
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def pred_psnr_db_min(self) -> float:
        return min(self.pred_psnr_db)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(tolerances=self.tolerances.to_dict(), pred_psnr_db_min=self.pred_psnr_db_min,
                    passed=self.passed)
        return data


def fp32_noise(reference: TorchReference, spec: IOSpec, frame: np.ndarray,
               state: dict[str, np.ndarray]) -> dict[str, float]:
    """The FP32 noise of one step, per output tensor: how far the reference's own FP32 result
    moves when computed other legitimate FP32 ways (:meth:`TorchReference.fp32_variants`),
    max over those ways of max|variant - ref| / max(1, max|ref|).

    Measured (demo checkpoint, first city frame, zero state): the reference is within
    1e-6 of float64 at 128x128 to 512x512; onnxruntime is up to 7e-6 away at 128, 1.2e-4 at 256
    and 4.2e-4 at 512, the error of its InstanceNormalization statistics (2^15..2^20 elements
    each) summed in 8 float32 lanes: the reference summed that way moves by the same to within
    1%. Another thread count, conv algorithm or the fast graph's time-stacked formulation moves
    it by < 3e-6."""
    reference_outputs = _by_output(spec, *reference.step(frame, state))
    noise = dict.fromkeys(reference_outputs, 0.0)
    for variant in reference.fp32_variants(frame, state):
        for name, value in _by_output(spec, *variant).items():
            noise[name] = max(noise[name], _rel(value, reference_outputs[name]))
    return noise


def compare_rollouts(stepper: OnnxStepper, reference: STAE | StepReference, frames: np.ndarray,
                     steps: int, horizon: int, tolerances: ToleranceTable, progress: bool = True
                     ) -> ParityReport:
    """Run both models over ``frames`` (>= steps, 3, H, W) and compare them; see the module doc.

    reference: the PyTorch model, or any :class:`StepReference` (e.g. :class:`OnnxReference`)."""
    if isinstance(reference, STAE):
        reference = TorchReference(reference)
    spec = stepper.spec
    prediction_name = spec.prediction.name
    names = [prediction_name, *(p.output.name for p in spec.state)]
    max_abs = dict.fromkeys(names, 0.0)
    max_rel = dict.fromkeys(names, 0.0)
    step1_rel: dict[str, float] = {}
    worst: dict[str, Any] = {"step": 0, "tensor": "", "value": -1.0, "abs": 0.0}
    psnr, state_rel = [], []
    closed: dict[str, list[float]] = {"prediction_max_abs": [], "chaos_prediction_max_abs": [],
                                      "state_max_rel": [], "chaos_state_max_rel": []}
    measured = (fp32_noise(reference, spec, frames[0][None], reference.zero_state())
                if tolerances.noise_factor is not None and isinstance(reference, TorchReference)
                else {})
    tolerances, step1_limits = tolerances.grounded(names, measured)
    noise = np.random.default_rng(0).normal(0, CHAOS_NOISE, frames.shape).astype(np.float32)
    onnx_state = stepper.zero_state()
    ref_state = chaos_state = reference.zero_state()
    onnx_in = ref_in = chaos_in = None
    total = steps + horizon - 1
    for step in tqdm(range(1, total + 1), desc="parity rollout", unit="step", disable=not progress):
        teacher_forced = step <= steps
        if teacher_forced:
            onnx_in = ref_in = frames[step - 1][None]
            chaos_in = ref_in + noise[step - 1][None]
        onnx_pred, onnx_state, outputs = stepper.step(onnx_in, onnx_state)
        ref_pred, ref_state = reference.step(ref_in, ref_state)
        chaos_pred, chaos_state = reference.step(chaos_in, chaos_state)
        reference_outputs = _by_output(spec, ref_pred, ref_state)
        rel_this_step = {}
        for name in names:
            got = outputs[name].astype(np.float32)
            abs_error = float(np.max(np.abs(got - reference_outputs[name])))
            rel_this_step[name] = abs_error / max(1.0, float(np.max(np.abs(reference_outputs[name]))))
            if teacher_forced:
                max_abs[name] = max(max_abs[name], abs_error)
                max_rel[name] = max(max_rel[name], rel_this_step[name])
                if rel_this_step[name] > worst["value"]:
                    worst = {"step": step, "tensor": name, "value": rel_this_step[name],
                             "abs": abs_error}
        if step == 1:
            step1_rel = dict(rel_this_step)
        state_worst = max(rel_this_step[p.output.name] for p in spec.state)
        chaos_state_worst = max(_rel(chaos_state[p.input.name], ref_state[p.input.name])
                                for p in spec.state)
        if teacher_forced:
            psnr.append(psnr_db(onnx_pred.astype(np.float32), ref_pred))
            state_rel.append(state_worst)
        if step >= steps:
            closed["prediction_max_abs"].append(float(np.max(np.abs(onnx_pred - ref_pred))))
            closed["chaos_prediction_max_abs"].append(float(np.max(np.abs(chaos_pred - ref_pred))))
            closed["state_max_rel"].append(state_worst)
            closed["chaos_state_max_rel"].append(chaos_state_worst)
        onnx_in, ref_in, chaos_in = onnx_pred.astype(np.float32), ref_pred, chaos_pred
    failures = [f"step 1: '{name}' relative error {rel:.3g} exceeds {tolerances.limit(name):.3g}"
                f" ({step1_limits[name]['source']})"
                for name, rel in step1_rel.items() if rel > tolerances.limit(name)]
    bad_psnr = [(i + 1, p) for i, p in enumerate(psnr) if p < tolerances.pred_psnr_db_min]
    if bad_psnr:
        step, value = min(bad_psnr, key=lambda sp: sp[1])
        failures.append(f"'{prediction_name}' PSNR vs the reference is below "
                        f"{tolerances.pred_psnr_db_min} dB at {len(bad_psnr)} of {steps} steps "
                        f"(lowest {value:.1f} dB at step {step})")
    return ParityReport(precision=stepper.metadata.precision, reference=reference.label,
                        steps=steps, horizon=horizon,
                        tolerances=tolerances, max_abs=max_abs, max_rel=max_rel,
                        step1_max_rel=step1_rel, step1_limits=step1_limits, worst=worst,
                        pred_psnr_db=psnr, state_rel_per_step=state_rel, closed_loop=closed,
                        failures=failures)


def _by_output(spec: IOSpec, prediction: np.ndarray, state: dict[str, np.ndarray]
               ) -> dict[str, np.ndarray]:
    """A step's prediction and next state keyed by the graph's output names."""
    return {spec.prediction.name: prediction,
            **{p.output.name: state[p.input.name] for p in spec.state}}


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got - ref))) / max(1.0, float(np.max(np.abs(ref))))
