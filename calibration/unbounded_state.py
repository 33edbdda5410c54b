"""The convolutions an unbounded recurrent state feeds, so INT8 can keep them in float.

An LSTM memory (``c = f ⊙ c + i ⊙ g``) has no bound: on a long stream it grows far past what
calibration saw (PredRNN++'s |C| reached 233 in calibration and 997 after 1000 steps). A
convolution that reads it gets one INT8 scale for small and huge values at once, and every
step's rounding error re-enters the memory. The cells declare such states
(``RecurrentCell.unbounded_states``, stored in the protocol as ``StatePair.unbounded``); this
module finds the convolutions they feed in the graph: the state input's values are followed
forward through every op that keeps their magnitude (slicing, concatenation, reshapes, and the
memory update's products and sums) and stop at ops that bound or normalise them (sigmoid,
tanh, softmax, normalisations) and at each convolution, which is marked.
"""
from __future__ import annotations

import onnx

from stae_deploy.runtime.protocol import IOSpec

CONV_OPS = ("Conv", "ConvTranspose")
# Ops whose output is bounded or normalised whatever their input, or not a value at all.
BOUNDING_OPS = frozenset({
    "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "HardSigmoid", "Sign",
    "InstanceNormalization", "LayerNormalization", "GroupNormalization", "BatchNormalization",
    "Shape", "Size"})


def unbounded_state_convs(model: onnx.ModelProto, spec: IOSpec) -> list[str]:
    """Names of the convolution nodes of ``model`` whose data input carries the values of a
    state that ``spec`` marks unbounded, directly or through magnitude-keeping ops, in graph
    (topological) order."""
    carrying = {pair.input.name for pair in spec.state if pair.unbounded}
    marked: list[str] = []
    for node in model.graph.node:
        if node.op_type in CONV_OPS:
            if node.input and node.input[0] in carrying:
                marked.append(node.name)
        elif node.op_type not in BOUNDING_OPS and carrying.intersection(node.input):
            carrying.update(name for name in node.output if name)
    return marked
