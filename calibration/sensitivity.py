"""``stae sensitivity``: the cost of quantising each node group, so the exclusion policy rests on
numbers.

    stae sensitivity MODEL.onnx --calib calib.npz [--target tensorrt] [--steps 60] -o sweep.md

Quantises one group at a time (every other node stays FP32), plus three reference points:
everything the tool can quantise, every convolution, and the default policy. Each variant runs
``stae drift``'s measurement on held-out footage; the table gives its mean PSNR vs FP32, error
relative to the predicted change, truth gap and build-up slope. A group the tool does not
quantise at all (no Q/DQ node appears) is listed as such.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from stae_deploy.calibration.drift import held_out_streams, measure_drift
from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.calibration.policy import ALL_OP_TYPES, DEFAULT_POLICY, QuantPolicy
from stae_deploy.calibration.quantize import quantize_model
from stae_deploy.calibration.targets import DEFAULT_TARGET, target_named
from stae_deploy.export.onnx_graph import open_graph
from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.footage import CORE_CLIPS, clip_names

COLUMNS = ("psnr_vs_fp32_db_mean", "err_over_delta_mean", "truth_gap_db",
           "buildup_slope_db_per_100_steps")


@dataclass(frozen=True)
class SensitivitySettings:
    """How ``stae sensitivity`` measures each variant: quantised for ``target`` (a key of
    ``stae_deploy.calibration.targets.TARGETS``), then ``steps`` teacher-forced steps (>= 2) on
    the held-out frames of each of ``clips``."""

    target: str = DEFAULT_TARGET
    steps: int = 60
    clips: tuple[str, ...] = CORE_CLIPS

    def __post_init__(self) -> None:
        target_named(self.target)               # raises ConfigError naming an unknown target
        if self.steps < 2:
            raise ConfigError(f"steps: need at least 2, got {self.steps}")
        object.__setattr__(self, "clips", clip_names(self.clips))


def sweep_policies(model: onnx.ModelProto) -> dict[str, QuantPolicy]:
    """Variant label -> policy: the reference points, then one group alone at a time."""
    groups = group_nodes(model)
    policies = {"all ops": QuantPolicy(op_types=(ALL_OP_TYPES,), exclude_groups=()),
                "all convs": QuantPolicy(op_types=("Conv",), exclude_groups=()),
                "default policy": DEFAULT_POLICY}
    for group in groups:
        others = tuple(g for g in groups if g != group)
        policies[f"only {group}"] = QuantPolicy(op_types=(ALL_OP_TYPES,), exclude_groups=others)
    return policies


def quantized_node_count(model: onnx.ModelProto) -> int:
    """How many QuantizeLinear nodes ``model`` has (0: the tool quantised nothing)."""
    return sum(node.op_type == "QuantizeLinear" for node in model.graph.node)


def sensitivity_sweep(model_path: str | Path, calib_path: str | Path,
                      settings: SensitivitySettings) -> list[dict[str, Any]]:
    """One row per variant: label, policy, Q/DQ count and the drift summary (worst stream)."""
    model, metadata = open_graph(model_path)
    streams = held_out_streams(metadata.spec.frame_size, settings.clips, settings.steps)
    rows = []
    policies = sweep_policies(model)
    with tempfile.TemporaryDirectory() as scratch:
        for index, (label, policy) in enumerate(policies.items(), start=1):
            print(f"[{index}/{len(policies)}] {label}", file=sys.stderr)
            path = Path(scratch) / f"variant{index}.onnx"
            variant = quantize_model(model_path, calib_path, path, settings.target, policy)
            count = quantized_node_count(variant.model_proto)
            row: dict[str, Any] = {"variant": label, "policy": policy.to_dict(),
                                   "quantize_nodes": count}
            if count:
                report = measure_drift(model_path, {"int8": path}, streams, progress=False)
                row.update({k: report["worst"]["int8"][k] for k in COLUMNS})
            rows.append(row)
    return rows


def markdown_table(rows: list[dict[str, Any]], settings: SensitivitySettings) -> str:
    """The sweep as a markdown table (worst held-out stream of each variant)."""
    lines = [f"INT8 sensitivity, target {settings.target}, {settings.steps} teacher-forced steps "
             f"per held-out clip, "
             f"worst clip shown", "",
             "| variant | Q nodes | PSNR vs FP32 dB | err / predicted change | truth gap dB "
             "| build-up dB/100 steps |", "|---|---|---|---|---|---|"]
    for row in rows:
        if not row["quantize_nodes"]:
            continue
        lines.append(f"| {row['variant']} | {row['quantize_nodes']} | "
                     f"{row['psnr_vs_fp32_db_mean']:.2f} | {row['err_over_delta_mean']:.3f} | "
                     f"{row['truth_gap_db']:+.3f} | {row['buildup_slope_db_per_100_steps']:+.3f} |")
    untouched = [row["variant"].removeprefix("only ") for row in rows if not row["quantize_nodes"]]
    if untouched:
        lines += ["", f"Groups this target does not quantise at all: {', '.join(untouched)}."]
    return "\n".join(lines) + "\n"
