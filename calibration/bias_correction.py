"""Bias correction: remove the mean error each INT8 convolution adds, measured on calibration data.

Rounding weights and activations to INT8 shifts a convolution's output by a small amount whose
mean over pixels is not zero (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2; here the empirical variant). In a feed-forward
network that offset costs a fraction of a dB. In STAE it enters the memories, which average
their ring and forget slowly, and adds to the build-up ``stae drift`` measures. On the demo it
lowers the level the build-up settles at (mean penalty 0.72 -> 0.64 dB over 1000 steps), not
its slope: most of the build-up is rounding error that is not a per-channel mean
(``calibration/README.md``).

For every quantised convolution (activation input through Q -> DQ) this module measures, on the
calibration feeds, the per-output-channel mean of

    conv(DQ(Q(x)), DQ(W_q)) - conv(x, W)        x: the FP32 model's own input to that conv

i.e. the conv's local error with exact inputs, so the corrections of all convs are independent
and one pass over the data suffices, then subtracts it from the conv's bias in the Q/DQ graph
(an FP32 bias initializer, or the INT32 initializer behind an onnxruntime bias DQ).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from stae_deploy.runtime.errors import CalibrationError

ERROR_OUTPUT_PREFIX = "bias_error/"


@dataclass(frozen=True)
class QuantizedConv:
    """One INT8 conv of a Q/DQ graph: the FP32 tensor its activation Q reads, that Q and DQ
    node, their scale and zero point, and the conv's dequantised weight and bias (zeros when
    it has none)."""

    node: onnx.NodeProto
    activation: str
    quantize: onnx.NodeProto
    dequantize: onnx.NodeProto
    scale: np.ndarray
    zero_point: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


def quantized_convs(model: onnx.ModelProto) -> list[QuantizedConv]:
    """The convs of a Q/DQ graph whose activation input is quantised (input 0 through Q -> DQ)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = []
    for node in model.graph.node:
        dequantize = producers.get(node.input[0]) if node.op_type == "Conv" else None
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producers.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear":
            continue
        weight = constant_value(model, node.input[1], producers)
        has_bias = len(node.input) > 2 and node.input[2]
        found.append(QuantizedConv(
            node, quantize.input[0], quantize, dequantize,
            constant_value(model, quantize.input[1], producers),
            constant_value(model, quantize.input[2], producers), weight,
            constant_value(model, node.input[2], producers) if has_bias
            else np.zeros(weight.shape[0], np.float32)))
    return found


def constant_value(model: onnx.ModelProto, name: str,
                   producers: Mapping[str, onnx.NodeProto]) -> np.ndarray:
    """The value of a tensor computed from initializers only (e.g. a weight's Q -> DQ or DQ)."""
    from onnx.reference import ReferenceEvaluator

    initializers = {init.name: init for init in model.graph.initializer}
    if name in initializers:
        return numpy_helper.to_array(initializers[name])
    nodes, pending, needed = [], [name], set()
    while pending:
        tensor = pending.pop()
        if tensor in initializers:
            needed.add(tensor)
        elif tensor in producers:
            if producers[tensor] not in nodes:
                nodes.insert(0, producers[tensor])
            pending.extend(i for i in producers[tensor].input if i)
        else:
            raise CalibrationError(f"bias correction: tensor '{tensor}' (feeding '{name}') is "
                                   f"not a constant of the quantised graph")
    graph = helper.make_graph(
        nodes, "constant", [],
        [helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)],
        [initializers[n] for n in sorted(needed)])
    probe = helper.make_model(graph, opset_imports=model.opset_import)
    return ReferenceEvaluator(probe).run(None, {})[0]


def error_probe(fp32_model: onnx.ModelProto, convs: list[QuantizedConv]) -> onnx.ModelProto:
    """The FP32 model whose only outputs are, per quantised conv, ``bias_error/<conv name>``
    (C_out,): the mean over every axis but channels of its INT8 version (its Q/DQ, weight and
    bias, fed the FP32 activation) minus its FP32 output."""
    probe = copy.deepcopy(fp32_model)
    graph = probe.graph
    fp32_nodes = {node.name: node for node in graph.node}
    fp32_tensors = {out for node in graph.node for out in node.output} | {
        i.name for i in graph.input}
    del graph.output[:]
    for index, conv in enumerate(convs):
        fp32_conv = fp32_nodes.get(conv.node.name)
        if fp32_conv is None or fp32_conv.op_type != "Conv" or conv.activation not in fp32_tensors:
            raise CalibrationError(f"bias correction: quantised conv '{conv.node.name}' (input "
                                   f"'{conv.activation}') has no counterpart in the FP32 model")
        tag = f"bias_probe_{index}"
        rank = conv.weight.ndim
        graph.initializer.extend([
            numpy_helper.from_array(conv.scale, f"{tag}_scale"),
            numpy_helper.from_array(conv.zero_point, f"{tag}_zero_point"),
            numpy_helper.from_array(conv.weight.astype(np.float32), f"{tag}_weight"),
            numpy_helper.from_array(conv.bias.astype(np.float32), f"{tag}_bias"),
            numpy_helper.from_array(np.array([0, *range(2, rank)], np.int64), f"{tag}_axes")])
        quantize = helper.make_node("QuantizeLinear", [conv.activation, f"{tag}_scale",
                                                       f"{tag}_zero_point"], [f"{tag}_q"])
        dequantize = helper.make_node("DequantizeLinear", [f"{tag}_q", f"{tag}_scale",
                                                           f"{tag}_zero_point"], [f"{tag}_dq"])
        quantize.attribute.extend(conv.quantize.attribute)
        dequantize.attribute.extend(conv.dequantize.attribute)
        int8_conv = helper.make_node("Conv", [f"{tag}_dq", f"{tag}_weight", f"{tag}_bias"],
                                     [f"{tag}_output"])
        int8_conv.attribute.extend(fp32_conv.attribute)
        graph.node.extend([
            quantize, dequantize, int8_conv,
            helper.make_node("Sub", [f"{tag}_output", fp32_conv.output[0]], [f"{tag}_error"]),
            helper.make_node("ReduceMean", [f"{tag}_error", f"{tag}_axes"],
                             [ERROR_OUTPUT_PREFIX + conv.node.name], keepdims=0)])
        graph.output.append(helper.make_tensor_value_info(
            ERROR_OUTPUT_PREFIX + conv.node.name, onnx.TensorProto.FLOAT, [conv.weight.shape[0]]))
    return probe


def measure_bias_errors(fp32_model: onnx.ModelProto, convs: list[QuantizedConv],
                        feeds: Iterable[Mapping[str, np.ndarray]],
                        progress: bool = False) -> dict[str, np.ndarray]:
    """Conv name -> its mean output error per channel (C_out,), averaged over the feeds."""
    import onnxruntime
    from tqdm import tqdm

    session = onnxruntime.InferenceSession(error_probe(fp32_model, convs).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    totals = [np.zeros(conv.weight.shape[0], np.float64) for conv in convs]
    count = 0
    for feed in tqdm(list(feeds), desc="bias correction", unit="batch", disable=not progress):
        for total, value in zip(totals, session.run(names, dict(feed))):
            total += value
        count += 1
    if count == 0:
        raise CalibrationError("bias correction: no calibration feeds")
    return {name[len(ERROR_OUTPUT_PREFIX):]: total / count for name, total in zip(names, totals)}


def apply_bias_corrections(model: onnx.ModelProto, errors: Mapping[str, np.ndarray]) -> None:
    """Subtract each conv's mean error from its bias, in place: an FP32 bias initializer
    directly, an INT32 bias behind a DequantizeLinear in units of its scale. A conv without a
    bias gets one."""
    nodes = {node.name: node for node in model.graph.node}
    producers = {out: node for node in model.graph.node for out in node.output}
    initializers = {init.name: init for init in model.graph.initializer}
    for name, error in errors.items():
        conv = nodes[name]
        if len(conv.input) < 3 or not conv.input[2]:
            bias_name = f"{name}.bias_correction"
            model.graph.initializer.append(numpy_helper.from_array(
                (-error).astype(np.float32), bias_name))
            if len(conv.input) == 3:
                conv.input[2] = bias_name
            else:
                conv.input.append(bias_name)
            continue
        bias = conv.input[2]
        if bias in initializers:
            _replace(initializers[bias], numpy_helper.to_array(initializers[bias]) - error)
            continue
        dequantize = producers.get(bias)
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or \
                dequantize.input[0] not in initializers:
            raise CalibrationError(f"bias correction: conv '{name}' has a bias '{bias}' that is "
                                   f"neither an initializer nor a dequantised one")
        stored = initializers[dequantize.input[0]]
        scale = constant_value(model, dequantize.input[1], producers)
        values = numpy_helper.to_array(stored)
        _replace(stored, values - np.round(error / scale).astype(values.dtype))


def _replace(initializer: onnx.TensorProto, values: np.ndarray) -> None:
    initializer.CopyFrom(numpy_helper.from_array(values.astype(
        numpy_helper.to_array(initializer).dtype), initializer.name))


def correct_conv_biases(fp32_model: onnx.ModelProto, quantized: onnx.ModelProto,
                        feeds: Iterable[Mapping[str, np.ndarray]],
                        progress: bool = False) -> dict[str, Any]:
    """Measure and remove every INT8 conv's mean output error (in place on ``quantized``).
    Returns what to record: convs corrected, the largest |correction| and its conv."""
    convs = quantized_convs(quantized)
    if not convs:
        return {"convs": 0}
    errors = measure_bias_errors(fp32_model, convs, feeds, progress)
    apply_bias_corrections(quantized, errors)
    largest = max(errors, key=lambda n: float(np.abs(errors[n]).max()))
    return {"convs": len(convs), "largest_abs_correction": float(np.abs(errors[largest]).max()),
            "largest_at": largest}
