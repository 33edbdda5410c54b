"""Write a Triton model repository served by Triton's Python backend (CPU servers, and the
``tritonserver`` bundled in the ``nvidia-pytriton`` wheel, which has no onnxruntime or TensorRT
backend).

    stae triton MODEL.onnx -o model_repository/ --backend python [--max-batch 8] ...

Writes ``<out>/<name>/config.pbtxt``, ``<out>/<name>/1/model.py`` (a copy of
:mod:`stae_deploy.serving.triton_python_model`) and ``<out>/<name>/1/stae.onnx`` (the exported
step, unchanged, so its metadata still names every tensor). The sequence batcher hands the
model START/END/READY/CORRID; the state stays in the model's process, one runtime stream per
correlation ID, and every sequence with a request in a batch is stepped at once (``oldest``
strategy). Clients are the same as for the onnxruntime repository
(:mod:`stae_deploy.serving.triton_client`).
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from stae_deploy.runtime.errors import ConfigError, OutputExistsError
from stae_deploy.runtime.onnx_artifact import OnnxArtifact
from stae_deploy.runtime.artifact import ArtifactMetadata
from stae_deploy.serving.triton_graph import CORRID_DTYPE, CORRID_OUT
from stae_deploy.serving.triton_repository import (TRITON_TYPES, VERSION_DIR, TritonOptions,
                                                   TritonRepository, _dims,
                                                   control_inputs_pbtxt, staged_model_dir,
                                                   metadata_parameters_pbtxt,
                                                   _parse_with_triton_schema,
                                                   require_dynamic_batch, state_bytes_per_stream)

MODEL_SCRIPT = "model.py"
ARTIFACT = "stae.onnx"                        # the exported step, beside model.py
THREADS_PARAMETER = "onnxruntime_threads"     # config parameter: onnxruntime threads (0: default)
# model.py's source: only Triton can import it (its triton_python_backend_utils exists there).
MODEL_SOURCE = importlib.util.find_spec("stae_deploy.serving.triton_python_model")


def python_config_pbtxt(metadata: ArtifactMetadata, options: TritonOptions, threads: int,
                        source: str) -> str:
    """``config.pbtxt`` of the Python-backend model: frame in; prediction and CORRID_OUT out;
    the step's metadata in its parameters."""
    frame, prediction = metadata.spec.frame, metadata.spec.prediction
    return "\n".join([
        f"# Written by `stae triton --backend python` from {source}: model.py steps",
        f"# 1/{ARTIFACT} with the torch-free runtime, one state per sequence.",
        f'name: "{options.model_name}"',
        'backend: "python"',
        f"max_batch_size: {options.max_batch}",
        f'input [ {{ name: "{frame.name}" data_type: {TRITON_TYPES[frame.dtype]} '
        f"dims: {_dims(frame)} }} ]",
        "output [",
        f'  {{ name: "{prediction.name}" data_type: {TRITON_TYPES[prediction.dtype]} '
        f"dims: {_dims(prediction)} }},",
        f'  {{ name: "{CORRID_OUT}" data_type: {TRITON_TYPES[CORRID_DTYPE]} dims: [ 1 ] }}',
        "]",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {options.max_sequence_idle_us}",
        control_inputs_pbtxt("int32", CORRID_DTYPE),
        "  oldest {",
        f"    max_candidate_sequences: {options.max_candidate_sequences or 1024}",
        f"    max_queue_delay_microseconds: {options.max_queue_delay_us}",
        "  }",
        "}",
        f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]",
        f'parameters {{ key: "{THREADS_PARAMETER}" '
        f'value {{ string_value: "{threads}" }} }}',
        metadata_parameters_pbtxt(metadata),
        "",
    ])


def write_python_repository(source: str | Path, output: str | Path, options: TritonOptions,
                            threads: int = 0, force: bool = False) -> TritonRepository:
    """Write ``<output>/<model_name>/`` for the ONNX step ``source`` (dynamic batch).

    threads: onnxruntime intra-op threads in the server (0: onnxruntime's default). Refuses
    (:class:`OutputExistsError`) an existing model directory unless ``force``; nothing is
    written before every check has passed.
    """
    source, output = Path(source), Path(output)
    model_dir = output / options.model_name
    if source.suffix.lower() != ".onnx":
        raise ConfigError(f"{source}: the Python backend serves an ONNX step (.onnx); engines "
                          f"need the TensorRT backend (`stae triton` without --backend python)")
    if threads < 0:
        raise ConfigError(f"threads: expected >= 0, got {threads}")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: the model repository must be a directory, not a file")
    if model_dir.exists() and not force:
        raise OutputExistsError(f"{model_dir} already exists; pass --force to overwrite it")
    metadata = OnnxArtifact.open(source).metadata
    spec = metadata.spec
    require_dynamic_batch(spec, str(source))
    config_text = python_config_pbtxt(metadata, options, threads, source.name)
    _parse_with_triton_schema(config_text)
    with staged_model_dir(model_dir) as staging:
        shutil.copyfile(source, staging / VERSION_DIR / ARTIFACT)
        assert MODEL_SOURCE is not None and MODEL_SOURCE.origin is not None
        shutil.copyfile(MODEL_SOURCE.origin, staging / VERSION_DIR / MODEL_SCRIPT)
        (staging / "config.pbtxt").write_text(config_text)
        (staging / "README.md").write_text(
            f"# {options.model_name}: STAE on Triton's Python backend\n\nWritten by `stae triton "
            f"--backend python` from {source.name}. Serve the repository on this machine with\n"
            f"`stae serve {output}` (the tritonserver of the nvidia-pytriton wheel) and stream to "
            f"it with\n`python -m stae_deploy.serving.triton_client --url 127.0.0.1:GRPC_PORT "
            f"--model {options.model_name}\n--repository {output} --input VIDEO --sequence-id N`."
            f"\n")
    return TritonRepository(model_dir, model_dir / "config.pbtxt",
                            model_dir / VERSION_DIR / ARTIFACT,
                            model_dir / "README.md",
                            state_bytes_per_stream(spec), 0)
