"""The Triton-flavoured copy of an exported step: Triton's sequence controls as real graph I/O.

Triton's onnxruntime and tensorrt backends refuse a ``sequence_batching.control_input`` that is
not a real model input ("configuration specified sequence control 'X', but model does not provide
that input"), so :func:`add_sequence_controls` adds them, each ``(batch, 1)``, and makes them work:

* ``START`` (float32, 0/1): every state input is multiplied by ``1 - START`` before the model
  reads it, so a sequence's first request starts from zeros even if Triton handed it garbage
  (implicit state without ``initial_state`` is uninitialised memory).
* ``READY`` (float32, 0/1): every state output is ``READY ? new : old`` (an ONNX ``Where``), so a
  batch slot that holds no request this step hands its state back unchanged.
* ``END`` (float32, 0/1) and ``CORRID`` (int64): nothing in the step depends on them, and a
  TensorRT build drops unused inputs (Triton then rejects the engine). They are echoed as the
  outputs ``END_OUT`` and ``CORRID_OUT``: the cheapest real use, and a client can check that a
  response belongs to its sequence (``CORRID_OUT == sequence_id``) and saw the end flag.

Triton pairs implicit state inputs with outputs by the *sorted order of their names*, not by the
configured pair (triton-inference-server/core ``src/sequence_state.cc``, ``OutputState``: the
output's position in a ``std::map`` of output names indexes the ``std::map`` of input names;
server issue #8586). :func:`state_mispairs` is that check over a protocol, and
:func:`triton_state_names` gives the optional ``state_in.X``/``state_out.X`` renaming that always
pairs (same suffix on both sides, so both sort the same way).

The copy stores its own protocol (controls as extra data inputs/outputs, ``"triton_controls":
true`` in the notes) so ``check_graph_io`` and ``stae build`` work on it unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from stae_deploy.export.onnx_graph import graph_io, write_metadata
from stae_deploy.runtime.artifact import ArtifactMetadata, check_graph_io
from stae_deploy.runtime.errors import ArtifactError, ConfigError, ProtocolError
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec, TensorSpec

START, READY, END, CORRID = "START", "READY", "END", "CORRID"
CORRID_OUT, END_OUT = "CORRID_OUT", "END_OUT"
CONTROL_INPUTS = (START, READY, END, CORRID)
ECHO_OUTPUTS = (CORRID_OUT, END_OUT)
# CONTROL_SEQUENCE_CORRID may be TYPE_UINT64, TYPE_INT64, TYPE_UINT32 or TYPE_INT32
# (model_config.proto); the 32-bit ones truncate the id. TensorRT has no uint64 I/O and the
# protocol has no uint64, so int64: it holds every id below 2**63 exactly, in both backends.
CORRID_DTYPE = "int64"
NOTE_CONTROLS = "triton_controls"
NOTE_RENAMES = "triton_state_renames"
RENAMED_INPUT, RENAMED_OUTPUT = "state_in.", "state_out."


def triton_order(names: list[str]) -> list[str]:
    """``names`` in Triton's order: byte-wise, as a C++ ``std::map<std::string, ...>`` sorts."""
    return sorted(names, key=lambda name: name.encode("utf-8"))


def state_mispairs(spec: IOSpec) -> list[tuple[str, str, str]]:
    """Where Triton's sorted-name pairing differs from the protocol's pairs.

    Returns one ``(state input, output Triton would feed it, the protocol's output)`` per state
    input that Triton would feed from the wrong output; ``[]`` when every pair survives.
    """
    protocol = {p.input.name: p.output.name for p in spec.state}
    inputs = triton_order([p.input.name for p in spec.state])
    outputs = triton_order([p.output.name for p in spec.state])
    return [(i, o, protocol[i]) for i, o in zip(inputs, outputs) if protocol[i] != o]


def check_state_pairing(spec: IOSpec, source: str) -> None:
    """Raise :class:`ProtocolError` listing every mispair of :func:`state_mispairs`."""
    mispairs = state_mispairs(spec)
    if mispairs:
        listed = "; ".join(f"state input '{i}' would get output '{o}' (its pair is '{p}')"
                           for i, o, p in mispairs)
        raise ProtocolError(   # one line: the CLI prints a user error as a single line
            f"{source}: Triton pairs state inputs with outputs by sorted name, not by the "
            f"configured pair (triton-inference-server/server#8586), and these names mispair: "
            f"{listed}. Rename the state tensors so both sides sort alike, or pass "
            f"--rename-states (state_in.X / state_out.X)")


def triton_state_names(spec: IOSpec, rename: bool) -> dict[str, tuple[str, str]]:
    """State input name -> (input name, output name) in the Triton copy.

    ``rename``: ``state_in.X`` / ``state_out.X`` for the protocol pair with input ``X`` (pairs
    by construction); otherwise the protocol's own names.
    """
    return {p.input.name: ((RENAMED_INPUT + p.input.name, RENAMED_OUTPUT + p.input.name)
                           if rename else (p.input.name, p.output.name)) for p in spec.state}


def has_controls(spec: IOSpec) -> bool:
    """True when ``spec`` already carries the sequence controls and their echoes."""
    inputs = {t.name for t in spec.data_inputs}
    outputs = {t.name for t in spec.data_outputs}
    return set(CONTROL_INPUTS) <= inputs and set(ECHO_OUTPUTS) <= outputs


def controlled_spec(spec: IOSpec, rename: bool = False) -> IOSpec:
    """The Triton copy's protocol: the controls (``(batch, 1)``) appended to the data inputs,
    the echoes to the data outputs, states renamed when ``rename``; needs a dynamic batch."""
    if spec.batch != DYNAMIC_BATCH:
        raise ConfigError(
            f"the model has a static batch of {spec.batch}; Triton's sequence batcher needs a "
            f"dynamic batch axis: re-export it with `stae export --dynamic-batch`")
    batch = spec.batch
    controls = tuple(TensorSpec(name, (batch, 1), CORRID_DTYPE if name == CORRID else "float32")
                     for name in CONTROL_INPUTS)
    echoes = (TensorSpec(CORRID_OUT, (batch, 1), CORRID_DTYPE),
              TensorSpec(END_OUT, (batch, 1), "float32"))
    names = triton_state_names(spec, rename)
    state = tuple(replace(p, input=replace(p.input, name=names[p.input.name][0]),
                          output=replace(p.output, name=names[p.input.name][1]))
                  for p in spec.state)
    return IOSpec(data_inputs=(*spec.data_inputs, *controls),
                  data_outputs=(*spec.data_outputs, *echoes), state=state, version=spec.version)


def add_sequence_controls(model: onnx.ModelProto, metadata: ArtifactMetadata, source: str,
                          rename_states: bool = False) -> ArtifactMetadata:
    """Rewrite ``model`` in place into its Triton copy and return the metadata stored in it.

    Adds the inputs START/READY/END (float32) and CORRID (int64), all ``(batch, 1)``; every state
    input X now reaches the graph as ``X * (1 - START)``, every state output is
    ``Where(READY > 0.5, new, X)``; CORRID and END are echoed as CORRID_OUT and END_OUT.
    ``source`` names the file in errors.
    """
    spec = metadata.spec
    if has_controls(spec):
        raise ArtifactError(f"{source}: it already has Triton's sequence controls")
    new_spec = controlled_spec(spec, rename_states)
    graph = model.graph
    batch_dim = _batch_dim(graph, spec.frame.name, source)
    names = triton_state_names(spec, rename_states)

    constants: dict[str, np.ndarray] = {"triton/one": np.array(1.0, np.float32), "triton/half": np.array(0.5, np.float32)}
    pre: list[onnx.NodeProto] = [
        helper.make_node("Sub", ["triton/one", START], ["triton/not_start"], "triton/not_start")]
    post: list[onnx.NodeProto] = []
    for rank in sorted({len(p.input.shape) for p in spec.state}):
        # (batch, 1) -> (batch, 1, ..., 1) of the state's rank, so it broadcasts per batch slot.
        axes = f"triton/axes_rank{rank}"
        constants[axes] = np.arange(2, rank, dtype=np.int64)
        pre += [helper.make_node("Unsqueeze", ["triton/not_start", axes],
                                 [f"triton/not_start_rank{rank}"], f"triton/not_start_rank{rank}"),
                helper.make_node("Unsqueeze", [READY, axes], [f"triton/ready_f_rank{rank}"],
                                 f"triton/ready_f_rank{rank}"),
                helper.make_node("Greater", [f"triton/ready_f_rank{rank}", "triton/half"],
                                 [f"triton/ready_rank{rank}"], f"triton/ready_rank{rank}")]
    for pair in spec.state:
        old_in, old_out = pair.input.name, pair.output.name
        new_in, new_out = names[old_in]
        masked, computed = f"triton/{old_in}/masked", f"triton/{old_out}/computed"
        _rename_tensor(graph, old_in, masked)
        _rename_tensor(graph, old_out, computed)
        _rename_value(graph.input, old_in, new_in)
        _rename_value(graph.output, old_out, new_out)
        rank = len(pair.input.shape)
        pre.append(helper.make_node("Mul", [new_in, f"triton/not_start_rank{rank}"], [masked],
                                    f"triton/{old_in}/start"))
        post.append(helper.make_node("Where", [f"triton/ready_rank{rank}", computed, new_in],
                                     [new_out], f"triton/{old_out}/ready"))
    post += [helper.make_node("Identity", [CORRID], [CORRID_OUT], "triton/corrid_echo"),
             helper.make_node("Identity", [END], [END_OUT], "triton/end_echo")]

    nodes = [*pre, *graph.node, *post]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(value, name)
                             for name, value in constants.items())
    onnx_types = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64}
    for tensor in new_spec.data_inputs[len(spec.data_inputs):]:
        graph.input.append(helper.make_tensor_value_info(
            tensor.name, onnx_types[tensor.dtype], [batch_dim, 1]))
    for tensor in new_spec.data_outputs[len(spec.data_outputs):]:
        graph.output.append(helper.make_tensor_value_info(
            tensor.name, onnx_types[tensor.dtype], [batch_dim, 1]))

    notes = {**metadata.notes, NOTE_CONTROLS: True}
    if rename_states:
        notes[NOTE_RENAMES] = {old: list(new) for old, new in names.items()}
    ranges = metadata.state_ranges               # keyed by the renamed state inputs too
    new_metadata = replace(metadata, spec=new_spec, notes=notes, state_ranges=ranges and replace(
        ranges, ranges={names[name][0]: bounds for name, bounds in ranges.ranges.items()}))
    write_metadata(model, new_metadata)
    onnx.checker.check_model(model, full_check=True)
    inputs, outputs = graph_io(model)
    check_graph_io(new_spec, inputs, outputs, f"{source} (Triton copy)")
    return new_metadata


def _batch_dim(graph: onnx.GraphProto, frame: str, source: str) -> str | int:
    """The symbolic name of axis 0 of the graph input ``frame`` (reused for the controls)."""
    for value in graph.input:
        if value.name == frame:
            dim = value.type.tensor_type.shape.dim[0]
            return dim.dim_param if dim.HasField("dim_param") else dim.dim_value
    raise ArtifactError(f"{source}: graph input '{frame}' is missing")


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever nodes and value_info mention it."""
    for node in graph.node:
        for field in (node.input, node.output):
            for index, name in enumerate(field):
                if name == old:
                    field[index] = new
    _rename_value(graph.value_info, old, new)


def _rename_value(values, old: str, new: str) -> None:  # a repeated ValueInfoProto field
    for value in values:
        if value.name == old:
            value.name = new
