"""``stae quantize``: an INT8 (Q/DQ) graph from an FP32 export and a calibration file.

    stae quantize MODEL.onnx --calib calib.npz -o MODEL.int8.onnx [--target tensorrt|onnxruntime]
        [--op-types Conv ...] [--exclude-groups head ...] [--exclude-nodes NAME ...]
        [--no-bias-correction]

Both targets read the same calibration file and the same policy (``stae_deploy.calibration.policy``): what
is quantised, and which node groups stay FP32 (and, by default, the convolutions fed by a state
the cell declares unbounded: ``stae_deploy.calibration.unbounded_state``). Then, on the same calibration data, each INT8
conv's mean output error is removed from its bias (``stae_deploy.calibration.bias_correction``). The INT8
graph keeps the FP32 model's I/O (the recurrent state crosses steps in FP32) and its metadata,
with precision "int8" and the target, policy, tool and calibration provenance in its notes, and
the state ranges calibration saw (read by the runtime's range guard).
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from stae_deploy.calibration.bias_correction import correct_conv_biases
from stae_deploy.calibration.calib_data import (batches, calibration_state_ranges, load_calibration,
                                               load_calibration_info)
from stae_deploy.calibration.node_groups import group_nodes
from stae_deploy.calibration.policy import DEFAULT_POLICY, QuantPolicy
from stae_deploy.calibration.targets import DEFAULT_TARGET, target_named
from stae_deploy.calibration.unbounded_state import unbounded_state_convs
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.export.onnx_graph import graph_io, load_model, open_graph, save_model, write_metadata
from stae_deploy.runtime.artifact import ArtifactMetadata, check_graph_io
from stae_deploy.runtime.errors import ArtifactError, CalibrationError
from stae_deploy.runtime.files import refuse_overwrite, sha256_file


def quantize_model(source: str | Path, calib_path: str | Path, output: str | Path,
                   target: str = DEFAULT_TARGET, policy: QuantPolicy = DEFAULT_POLICY,
                   force: bool = False, bias_correction: bool = True,
                   progress: bool = False) -> OnnxArtifact:
    """Write the INT8 version of the fp32 artifact ``source`` to ``output``; returns the written
    artifact (its metadata, bytes and graph in memory).

    bias_correction: afterwards remove each INT8 conv's mean output error, measured on the
    calibration data (``stae_deploy.calibration.bias_correction``), which the memories would otherwise
    integrate.
    Refuses a calibration file recorded with another model (its sha256 is in calib.npz.json).
    """
    source, output = Path(source), refuse_overwrite(output, force)
    model, metadata = open_graph(source)
    if metadata.precision != "fp32":
        raise ArtifactError(f"{source}: precision is {metadata.precision}; quantise an fp32 export")
    tensors = load_calibration(calib_path, metadata.spec)
    source_sha256 = sha256_file(source)
    info = load_calibration_info(calib_path)
    if info is not None and info.model_sha256 != source_sha256:
        raise CalibrationError(f"{calib_path}: recorded with another model (sha256 "
                               f"{info.model_sha256[:12]}..., {source} is {source_sha256[:12]}...); "
                               f"record it again with `stae calibrate {source}`")
    excluded = policy.excluded_nodes(group_nodes(model),
                                     unbounded_state_convs(model, metadata.spec))
    tool = target_named(target)
    with tempfile.TemporaryDirectory(dir=output.parent) as scratch:
        # The tools write intermediate files next to their input (ModelOpt even rewrote it in
        # place): they get a private copy, so the user's file is never touched.
        private_source, written = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        shutil.copyfile(source, private_source)
        tool_info = tool.quantize(private_source, written, batches(tensors, metadata.spec),
                                  None if policy.quantizes_all_op_types else list(policy.op_types),
                                  excluded)
        quantized = load_model(written)
    corrected = (correct_conv_biases(model, quantized, batches(tensors, metadata.spec), progress)
                 if bias_correction else False)
    int8_metadata = ArtifactMetadata(
        spec=metadata.spec, config=metadata.config, precision="int8",
        checkpoint_sha256=metadata.checkpoint_sha256, preprocessing=metadata.preprocessing,
        notes={**metadata.notes, "int8": {
            "target": target, "policy": policy.to_dict(), **tool_info,
            "excluded_nodes": len(excluded), "bias_correction": corrected,
            "source_onnx_sha256": source_sha256,
            "calibration_sha256": sha256_file(calib_path),
            "calibration_samples": len(next(iter(tensors.values())))}},
        state_ranges=(calibration_state_ranges(info, metadata.spec) if info is not None
                      else metadata.state_ranges))
    write_metadata(quantized, int8_metadata)        # the tools do not carry metadata_props over
    inputs, outputs = graph_io(quantized)
    check_graph_io(metadata.spec, inputs, outputs, f"{output} (just quantised)")
    return save_model(quantized, output)
