"""The checks every exported graph must pass, in order, collected into one report:

1. ``onnx.checker`` full check;  2. strict shape inference with every output shape static;
3. the TensorRT lint;  4. the stored protocol against the graph's real I/O (a mismatch is refused
with :class:`SpecMismatchError` naming the tensor);  5. a parity rollout against the reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from stae_deploy.export.onnx_graph import open_graph
from stae_deploy.verify.parity import TOLERANCES, ParityReport, ToleranceTable, compare_rollouts
from stae_deploy.verify.tensorrt_lint import lint_for_tensorrt, load_support_table
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.onnx_session import OnnxStepper
from stae_deploy.stae_ref.model import STAE


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str


@dataclass
class CheckReport:
    model: str
    checks: list[CheckOutcome] = field(default_factory=list)
    parity: ParityReport | None = None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks) and (self.parity is None or self.parity.passed)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model, "passed": self.passed,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                       for c in self.checks]}
        if self.parity is not None:
            data.update(self.parity.to_dict())
        return data


def static_checks(source: str | Path | OnnxArtifact) -> tuple[CheckReport, onnx.ModelProto]:
    """Checks 1-4 (no reference needed) on a path or an artifact already open (its parsed graph
    is reused). Raises on a missing or damaged file or a protocol mismatch (check 4)."""
    artifact = source if isinstance(source, OnnxArtifact) else OnnxArtifact.open(source)
    report = CheckReport(model=str(artifact.path))
    model, metadata = open_graph(artifact)
    try:
        onnx.checker.check_model(model, full_check=True)
        report.checks.append(CheckOutcome("onnx.checker", True, "full check passed"))
    except onnx.checker.ValidationError as err:
        report.checks.append(CheckOutcome("onnx.checker", False, str(err).splitlines()[0]))
    report.checks.append(_shape_inference(model))
    table = load_support_table()
    lint_name = f"TensorRT {table['tensorrt_version']} op/dtype lint"
    if metadata.notes.get("int8", {}).get("target") == "onnxruntime":
        report.checks.append(CheckOutcome(lint_name, True, "not applicable: quantised for "
                                          "onnxruntime (INT32 bias Q/DQ); for TensorRT quantise "
                                          "with --target tensorrt"))
    else:
        findings = lint_for_tensorrt(model, table)
        ops = sorted({n.op_type for n in model.graph.node})
        report.checks.append(CheckOutcome(
            lint_name, not findings,
            "; ".join(map(str, findings[:10]))
            + (f" (+{len(findings) - 10} more)" if len(findings) > 10 else "")
            if findings else f"{len(model.graph.node)} nodes, ops {', '.join(ops)}"))
    report.checks.append(CheckOutcome(
        "protocol", True, f"metadata protocol matches the graph's {len(metadata.spec.inputs)} "
                          f"inputs and {len(metadata.spec.outputs)} outputs"))
    return report, model


def check_artifact(source: str | Path | OnnxArtifact, reference: STAE, frames, steps: int,
                   horizon: int, tolerances: ToleranceTable | None = None, progress: bool = True
                   ) -> CheckReport:
    """All checks, the parity rollout over ``frames`` ((N, 3, H, W) float32) included; the file
    is read and parsed once (``source``: a path or an artifact already open)."""
    artifact = source if isinstance(source, OnnxArtifact) else OnnxArtifact.open(source)
    report, _ = static_checks(artifact)
    stepper = OnnxStepper(artifact)
    tolerances = tolerances or TOLERANCES[stepper.metadata.precision]
    report.parity = compare_rollouts(stepper, reference, frames, steps, horizon, tolerances,
                                     progress)
    return report


def _shape_inference(model: onnx.ModelProto) -> CheckOutcome:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                     data_prop=True)
    except onnx.shape_inference.InferenceError as err:
        return CheckOutcome("shape inference", False, str(err).splitlines()[0])
    unknown = [v.name for v in inferred.graph.output
               if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim[1:])]
    if unknown:
        return CheckOutcome("shape inference", False, f"outputs with unknown shapes: {unknown}")
    return CheckOutcome("shape inference", True,
                        f"strict mode, {len(inferred.graph.value_info)} intermediate tensors typed")
