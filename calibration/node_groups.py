"""The graph's nodes grouped by their role in STAE, so quantisation can be chosen per group.

Convolutions are grouped by the module their weight belongs to (initializer names survive the
export: ``cell.layers.0.conv_h.conv.weight``); every other node by its op type. The groups:

    encoders          SE/TE/OE convolutions (read the input clip)
    cell_input        STAM convs of the layer inputs: conv_t, conv_s, conv_o
    cell_recurrent    STAM convs reading the recurrent state: conv_h (H), conv_m (M)
    cell_memory       STAM convs reading the new memories C and M: conv_cm, fuse
    decoders          SD/TD/OD convolution stages
    to_pixels         each decoder's last conv (pixel-shuffled to frame resolution)
    head              eq. (8)'s fusion and time collapse: the convs that write the frame
    op:<OpType>       every non-convolution node of that type (op:Mul holds the gate products
                      and the memory updates; the attention softmax is op:Softmax in the plain
                      graph, op:ReduceMax/Exp/ReduceSum/Div in the fast one, ...)

Convs that the fast graph merged (``stae_deploy.export.graph_rewrites``) carry the joined weight names
``a+b+c``; the patterns match the first, and merged convs always share a group.
"""
from __future__ import annotations

import re
from collections import defaultdict

import onnx

CONV_GROUPS: tuple[tuple[str, str], ...] = (   # (group, weight-name pattern), first match wins
    ("encoders", r"^(spatial|temporal|output)_encoder\."),
    ("cell_input", r"^cell\.layers\.\d+\.conv_[tso]\."),
    ("cell_recurrent", r"^cell\.layers\.\d+\.conv_[hm]\."),
    ("cell_memory", r"^cell\.layers\.\d+\.(conv_cm|fuse)\."),
    ("to_pixels", r"_decoder\.to_pixels\."),
    ("decoders", r"_decoder\."),
    ("head", r"^(frame_fuse|time_collapse)\."),
)


def node_group(node: onnx.NodeProto) -> str:
    """The group of one node (see the module docstring)."""
    if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
        for group, pattern in CONV_GROUPS:
            if re.search(pattern, node.input[1]):
                return group
        return "other_convs"
    return f"op:{node.op_type}"


def group_nodes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Group name -> names of its nodes, in graph order. Every node is in exactly one group."""
    groups: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        groups[node_group(node)].append(node.name)
    return dict(groups)
