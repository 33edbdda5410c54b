"""Lint an ONNX graph against TensorRT's ONNX parser support table, kept as data.

The table (``tensorrt_onnx_ops.json``) records its source and TensorRT version. The lint flags:
ops TensorRT's parser does not support, tensor dtypes an op does not support, ops a one-step
graph must not contain (Loop/Scan/If), conv weights that are not build-time constants, tensors
of rank > 8, and opsets outside the supported range. It never needs TensorRT.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import onnx


TABLE_PATH = Path(__file__).with_name("tensorrt_onnx_ops.json")
# Ops whose first output is not the compute type (indices, shapes, quantized values).
_CHECK_INPUT_ONLY = {"QuantizeLinear", "DequantizeLinear", "Shape", "Size", "ArgMax", "ArgMin",
                     "NonZero", "IsNaN", "IsInf", "Equal", "Greater", "GreaterOrEqual", "Less",
                     "LessOrEqual"}


@dataclass(frozen=True)
class LintFinding:
    """One reason TensorRT may refuse or mis-handle the graph."""

    node: str
    op_type: str
    problem: str

    def __str__(self) -> str:
        return f"{self.op_type} node '{self.node}': {self.problem}"


@lru_cache(maxsize=4)
def load_support_table(path: str | Path = TABLE_PATH) -> dict[str, Any]:
    """The support table as a dict (see the JSON file for its fields and source)."""
    return json.loads(Path(path).read_text())


def lint_for_tensorrt(model: onnx.ModelProto, table: dict[str, Any] | None = None
                      ) -> list[LintFinding]:
    """Every finding for ``model``; an empty list means the graph looks buildable."""
    table = table or load_support_table()
    version = f"TensorRT {table['tensorrt_version']}"
    findings: list[LintFinding] = []
    low, high = table["opset_range"]
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not low <= opset.version <= high:
            findings.append(LintFinding("<model>", "opset", f"opset {opset.version} is outside "
                                        f"{version}'s supported range {low}..{high}"))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = _tensor_types(inferred)
    constants = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
        elif (node.op_type in ("QuantizeLinear", "DequantizeLinear", "Cast", "Identity")
              and node.input[0] in constants):
            constants.update(node.output)      # a constant weight seen through Q/DQ or a cast
    for node in inferred.graph.node:
        name = node.name or (node.output[0] if node.output else "?")
        if node.domain not in ("", "ai.onnx"):
            findings.append(LintFinding(name, node.op_type,
                                        f"custom domain '{node.domain}' needs a TensorRT plugin"))
            continue
        if node.op_type in table["forbidden_in_step_graph"]:
            findings.append(LintFinding(name, node.op_type,
                                        table["forbidden_in_step_graph"][node.op_type]))
            continue
        entry = table["ops"].get(node.op_type)
        if entry is None:
            findings.append(LintFinding(name, node.op_type,
                                        f"not supported by {version}'s ONNX parser"))
            continue
        checked = [node.input[0]] if node.op_type in _CHECK_INPUT_ONLY else \
            [*node.input[:1], *node.output[:1]]
        for tensor in checked:
            onnx_type = types.get(tensor)
            dtype = table["dtype_names"].get(onnx_type, onnx_type)
            if dtype and dtype not in entry["types"]:
                findings.append(LintFinding(name, node.op_type,
                                            f"tensor '{tensor}' is {dtype}; {version} supports "
                                            f"{'/'.join(entry['types'])} for this op"))
        weight_index = table["constant_weight_inputs"].get(node.op_type)
        if weight_index is not None and node.input[weight_index] not in constants:
            findings.append(LintFinding(name, node.op_type,
                                        f"weight '{node.input[weight_index]}' is not a constant "
                                        f"initializer ({entry.get('restrictions', '')})"))
    for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        rank = len(value.type.tensor_type.shape.dim)
        if rank > table["max_rank"]:
            findings.append(LintFinding(value.name, "tensor", f"rank {rank} exceeds TensorRT's "
                                        f"maximum of {table['max_rank']} dimensions"))
    return findings


def _tensor_types(model: onnx.ModelProto) -> dict[str, str]:
    """Tensor name -> ONNX element type name (FLOAT, FLOAT16, INT8, ...)."""
    name_of = onnx.TensorProto.DataType.Name
    types = {v.name: name_of(v.type.tensor_type.elem_type)
             for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    types.update({i.name: name_of(i.data_type) for i in model.graph.initializer})
    return types
