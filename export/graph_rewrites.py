"""Exact rewrites of an exported ONNX graph that make onnxruntime faster; the math is unchanged.

* :func:`decompose_softmax`: a Softmax over any axis but the last becomes
  ReduceMax, Sub, Exp, ReduceSum, Div. onnxruntime's CPU Softmax transposes a non-last axis to
  the end and back; ATT's softmax runs over the ring axis (tau slots, axis 1), where that
  transpose cost more than the softmax itself (20 ms of a 180 ms step at 512x512, profiled).
* :func:`merge_sibling_convs`: Convs that read the same tensor with the same kernel, stride,
  padding and group become one Conv with concatenated output channels and a Split: one im2col
  and one larger GEMM instead of several (STAM's conv_t, conv_s and conv_o all read H^{k-1}).
  The merged weight is named ``first+second+...`` after the originals, so a name pattern that
  matched the first conv (``stae_deploy.calibration.node_groups``) still matches.

Each rewrite returns how many places it changed; ``optimize_graph`` runs them all. New nodes
take the place of the first node they replace, so the graph stays topologically sorted.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper


def decompose_softmax(model: onnx.ModelProto) -> int:
    """Replace each Softmax whose axis is not the last by its five-op form; returns the count."""
    graph = model.graph
    ranks = _ranks(model)
    nodes, changed = [], 0
    for node in graph.node:
        axis = _attribute(node, "axis", -1)
        rank = ranks.get(node.input[0]) if node.op_type == "Softmax" else None
        if rank is None or axis in (-1, rank - 1):
            nodes.append(node)
            continue
        name, x, y = node.name or f"softmax_{changed}", node.input[0], node.output[0]
        axes = f"{name}/axes"
        graph.initializer.append(numpy_helper.from_array(np.array([axis], np.int64), axes))
        nodes += [
            helper.make_node("ReduceMax", [x, axes], [f"{name}/max"], f"{name}/ReduceMax",
                             keepdims=1),
            helper.make_node("Sub", [x, f"{name}/max"], [f"{name}/shifted"], f"{name}/Sub"),
            helper.make_node("Exp", [f"{name}/shifted"], [f"{name}/exp"], f"{name}/Exp"),
            helper.make_node("ReduceSum", [f"{name}/exp", axes], [f"{name}/sum"],
                             f"{name}/ReduceSum", keepdims=1),
            helper.make_node("Div", [f"{name}/exp", f"{name}/sum"], [y], f"{name}/Div"),
        ]
        changed += 1
    _replace_nodes(graph, nodes)
    return changed


def merge_sibling_convs(model: onnx.ModelProto) -> int:
    """Merge Convs sharing input, attributes and constant weights into one Conv + Split; returns
    the number of merged groups."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    siblings: dict[tuple, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        if node.op_type == "Conv" and all(name in initializers for name in node.input[1:]):
            attributes = tuple(sorted(helper.printable_attribute(a) for a in node.attribute))
            siblings[(node.input[0], len(node.input), attributes)].append(node)
    merged_first: dict[str, list[onnx.NodeProto]] = {}
    removed: set[str] = set()
    for group in siblings.values():
        if len(group) > 1:
            merged_first[group[0].output[0]] = _merge(graph, initializers, group)
            removed.update(n.output[0] for n in group[1:])
    nodes = []
    for node in graph.node:
        if node.output[0] in merged_first:
            nodes += merged_first[node.output[0]]
        elif node.output[0] not in removed:
            nodes.append(node)
    _replace_nodes(graph, nodes)
    return len(merged_first)


def optimize_graph(model: onnx.ModelProto) -> dict[str, int]:
    """Run every rewrite of this module on ``model`` in place; returns name -> places changed."""
    return {"merge_sibling_convs": merge_sibling_convs(model),
            "decompose_softmax": decompose_softmax(model)}


def _merge(graph: onnx.GraphProto, initializers: dict[str, onnx.TensorProto],
           convs: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """The Conv + Split replacing ``convs``; their outputs keep their names (the Split's)."""
    weights = [numpy_helper.to_array(initializers[c.input[1]]) for c in convs]
    weight_name = "+".join(c.input[1] for c in convs)
    graph.initializer.append(numpy_helper.from_array(np.concatenate(weights), weight_name))
    inputs = [convs[0].input[0], weight_name]
    if len(convs[0].input) > 2:
        bias_name = "+".join(c.input[2] for c in convs)
        biases = [numpy_helper.to_array(initializers[c.input[2]]) for c in convs]
        graph.initializer.append(numpy_helper.from_array(np.concatenate(biases), bias_name))
        inputs.append(bias_name)
    name = "+".join(c.name for c in convs)
    merged = helper.make_node("Conv", inputs, [f"{name}/output"], name)
    merged.attribute.extend(convs[0].attribute)
    splits = f"{name}/split"
    graph.initializer.append(numpy_helper.from_array(
        np.array([w.shape[0] for w in weights], np.int64), splits))
    split = helper.make_node("Split", [merged.output[0], splits], [c.output[0] for c in convs],
                             f"{name}/Split", axis=1)
    return [merged, split]


def _replace_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> rank, from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: len(v.type.tensor_type.shape.dim) for v in values
            if v.type.tensor_type.HasField("shape")}


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default
