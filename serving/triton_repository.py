"""Write an NVIDIA Triton model repository for a dynamic-batch STAE artifact.

    stae triton MODEL.onnx|MODEL.engine -o model_repository/ [--max-batch 8] [--force] ...

Writes ``<out>/<name>/config.pbtxt``, ``<out>/<name>/1/model.onnx`` (or ``model.plan``) and
``<out>/<name>/README.md``; clients stream video to it with ``stae_deploy.serving.triton_client``,
which reads the frame input from the repository. Triton's sequence batcher keeps
each stream's recurrent state on the server (implicit state, docs/design_brief.md §6); the config's
``state`` entries come from the protocol stored in the artifact, never re-typed.

* An ONNX source gets a Triton copy with the sequence controls as real inputs
  (``stae_deploy.serving.triton_graph``). An engine cannot be rewritten: it must have been built (``stae
  build``) from a ``model.onnx`` this command wrote, which its sidecar says.
* Triton pairs state inputs with outputs by sorted name (``stae_deploy.serving.triton_graph``); a protocol
  whose names mispair is refused, or renamed with ``--rename-states`` (ONNX sources only).
* The model directory is assembled beside the repository and renamed into it at the end, so a
  killed run never leaves a half-written model that Triton would try to load.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import onnx

from stae_deploy.export.onnx_graph import open_graph, save_model
from stae_deploy.serving.triton_graph import (CONTROL_INPUTS, CORRID, CORRID_OUT, END, NOTE_CONTROLS, READY,
                                 START, add_sequence_controls, check_state_pairing, has_controls)
from stae_deploy.runtime.artifact import (ENGINE_SUFFIXES, ONNX_SUFFIX, ArtifactMetadata,
                                          engine_sidecar_path, read_engine_sidecar)
from stae_deploy.runtime.errors import ArtifactError, ConfigError, OutputExistsError
from stae_deploy.runtime.protocol import DYNAMIC_BATCH, IOSpec, TensorSpec

TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8",
                "uint8": "TYPE_UINT8", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "bool": "TYPE_BOOL"}
STRATEGIES = ("direct", "oldest")
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
TRITON_DEFAULT_POOL_BYTES = 64 << 20     # tritonserver's default CUDA memory pool per GPU
VERSION_DIR = "1"
METADATA_PARAMETER_PREFIX = "stae."   # every key of ArtifactMetadata.to_props


@dataclass(frozen=True)
class TritonOptions:
    """How to serve the model.

    model_name:        the model's directory and name in Triton ([A-Za-z0-9_.-], no leading dot).
    max_batch:         max_batch_size: sequence slots per model instance (direct strategy).
    strategy:          "direct" (a fixed batch slot per sequence) or "oldest".
    max_candidate_sequences: sequences held per instance with "oldest" (None: max_batch).
    max_queue_delay_us: how long a batch may wait for more sequences' requests (microseconds).
    max_sequence_idle_us: a sequence with no request for this long loses its slot and state.
    instances:         model instances (per GPU with kind "gpu").
    kind:              "gpu" (KIND_GPU) or "cpu" (KIND_CPU).
    rename_states:     rename states to state_in.X / state_out.X so Triton's sorted-name pairing
                       holds (ONNX sources only).
    """

    model_name: str = "stae"
    max_batch: int = 8
    strategy: str = "direct"
    max_candidate_sequences: int | None = None
    max_queue_delay_us: int = 0
    max_sequence_idle_us: int = 5_000_000
    instances: int = 1
    kind: str = "gpu"
    rename_states: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.model_name):
            raise ConfigError(f"model_name: expected letters, digits, '_', '.', '-' (not starting "
                              f"with '.' or '-'), got {self.model_name!r}")
        for field, minimum in (("max_batch", 1), ("instances", 1), ("max_queue_delay_us", 0),
                               ("max_sequence_idle_us", 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{field}: expected an integer >= {minimum}, got {value!r}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"strategy: expected one of {STRATEGIES}, got {self.strategy!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"kind: expected one of {sorted(KINDS)}, got {self.kind!r}")
        candidates = self.max_candidate_sequences
        if candidates is not None:
            if self.strategy != "oldest":
                raise ConfigError("max_candidate_sequences: only used with strategy 'oldest'")
            if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
                raise ConfigError(f"max_candidate_sequences: expected an integer >= 1, got "
                                  f"{candidates!r}")

    @property
    def sequence_slots(self) -> int:
        """Sequences Triton holds state for at once: slots per instance x instances."""
        per_instance = (self.max_candidate_sequences or self.max_batch
                        if self.strategy == "oldest" else self.max_batch)
        return per_instance * self.instances


@dataclass(frozen=True)
class TritonRepository:
    """What :func:`write_repository` wrote. pool_bytes: the CUDA memory pool the state needs."""

    model_dir: Path
    config: Path
    model_file: Path
    readme: Path
    state_bytes_per_stream: int
    pool_bytes: int


def state_bytes_per_stream(spec: IOSpec) -> int:
    """Bytes of one stream's state: the sum over state inputs of per-sample elements x itemsize."""
    return sum(p.input.sample_nbytes for p in spec.state)


def cuda_pool_bytes(spec: IOSpec, streams: int) -> int:
    """The CUDA memory pool state needs: streams x state bytes per stream x 2 (Triton keeps an
    input and an output buffer per state)."""
    return streams * state_bytes_per_stream(spec) * 2


def require_dynamic_batch(spec: IOSpec, source: str) -> None:
    """Raise :class:`ConfigError` unless axis 0 of every tensor is the dynamic ``"batch"``."""
    if spec.batch != DYNAMIC_BATCH:
        raise ConfigError(
            f"{source}: the model has a static batch of {spec.batch}; Triton's sequence batcher "
            f"needs a dynamic batch axis: re-export it with `stae export --dynamic-batch`")


def check_servable(spec: IOSpec, source: str) -> None:
    """Raise unless ``spec`` can be served with implicit state: a dynamic batch, an RGB frame,
    float32 state (ConfigErrors naming the tensor) and a sorted-name pairing that holds
    (ProtocolError)."""
    require_dynamic_batch(spec, source)
    frame = spec.frame
    if len(frame.per_sample_shape) != 3 or frame.per_sample_shape[0] != 3:
        raise ConfigError(f"{source}: input '{frame.name}' is {list(frame.shape)}; expected an "
                          f"RGB frame (batch, 3, H, W)")
    for pair in spec.state:
        if pair.input.dtype != "float32":
            raise ConfigError(
                f"{source}: state '{pair.input.name}' is {pair.input.dtype}; the Triton "
                f"repository keeps state as TYPE_FP32: use a graph with float32 state I/O "
                f"(e.g. `stae fp16 --io-precision fp32`)")
    check_state_pairing(spec, source)


def load_onnx_source(path: Path, options: TritonOptions) -> tuple[onnx.ModelProto,
                                                                  ArtifactMetadata]:
    """(Triton copy, its metadata) from an exported ONNX file; a file that already is a Triton
    copy (a ``model.onnx`` this command wrote) is taken as it is."""
    model, metadata = open_graph(path)
    if metadata.notes.get(NOTE_CONTROLS):
        if not has_controls(metadata.spec):
            raise ArtifactError(f"{path}: its notes say '{NOTE_CONTROLS}' but its protocol lacks "
                                f"{', '.join(CONTROL_INPUTS)}; run `stae triton` on the original")
        if options.rename_states:
            raise ConfigError(f"{path}: it is already a Triton copy; --rename-states applies "
                              f"to the original export")
    else:
        require_dynamic_batch(metadata.spec, str(path))
        metadata = add_sequence_controls(model, metadata, str(path), options.rename_states)
    check_servable(metadata.spec, str(path))
    return model, metadata


def load_engine_source(path: Path, options: TritonOptions) -> ArtifactMetadata:
    """The sidecar metadata of an engine built from a ``model.onnx`` that ``stae triton`` wrote.

    Never needs TensorRT: everything checked is in the sidecar.
    """
    if not path.is_file():
        raise ArtifactError(f"{path}: no such engine file")
    if options.rename_states:
        raise ConfigError(f"{path}: --rename-states cannot rewrite an engine; pass it when "
                          f"running `stae triton` on the ONNX file the engine is built from")
    metadata, build = read_engine_sidecar(path)
    if not (metadata.notes.get(NOTE_CONTROLS) and has_controls(metadata.spec)):
        raise ConfigError(
            f"{path}: its sidecar ({engine_sidecar_path(path)}) has no Triton sequence controls "
            f"({', '.join(CONTROL_INPUTS)}); an engine cannot be rewritten. Run `stae triton "
            f"X.onnx -o REPO` on the ONNX it came from, `stae build REPO/<name>/1/model.onnx "
            f"-o model.plan`, then `stae triton model.plan -o REPO --force`")
    check_servable(metadata.spec, str(path))
    built_max = dict(build.get("build_config") or {}).get("max_batch")
    if isinstance(built_max, int) and built_max < options.max_batch:
        raise ConfigError(f"max_batch: {options.max_batch} exceeds the engine's optimisation "
                          f"profile (built with --max-batch {built_max}); pass --max-batch "
                          f"{built_max} or rebuild the engine")
    return metadata


def control_inputs_pbtxt(flag_type: str, corrid_dtype: str) -> str:
    """The ``control_input [...]`` block of ``sequence_batching``: START, READY and END as
    ``flag_type`` 0/1 ("fp32" or "int32"), CORRID as ``corrid_dtype`` (a protocol dtype)."""
    flag = f"{flag_type}_false_true: [ 0, 1 ]"

    def control(name: str, body: str) -> str:
        return f'    {{ name: "{name}" control [ {{ {body} }} ] }}'

    return "\n".join([
        "  control_input [",
        ",\n".join([control(START, f"kind: CONTROL_SEQUENCE_START {flag}"),
                    control(READY, f"kind: CONTROL_SEQUENCE_READY {flag}"),
                    control(END, f"kind: CONTROL_SEQUENCE_END {flag}"),
                    control(CORRID, f"kind: CONTROL_SEQUENCE_CORRID data_type: "
                                    f"{TRITON_TYPES[corrid_dtype]}")]),
        "  ]"])


def metadata_parameters_pbtxt(metadata: ArtifactMetadata) -> str:
    """``parameters`` entries carrying the artifact's metadata (its ``to_props`` pairs, all
    ``stae.*``), so that a client reads the served model's protocol from the server itself
    (:func:`metadata_from_model_config`)."""
    def quoted(value: str) -> str:          # a protobuf text-format string
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    return "\n".join(f'parameters {{ key: "{key}" value {{ string_value: {quoted(value)} }} }}'
                     for key, value in sorted(metadata.to_props().items()))


def metadata_from_model_config(config: Mapping[str, Any], source: str) -> ArtifactMetadata:
    """The artifact metadata a model's config (Triton's JSON form, as ``get_model_config``
    returns it) carries in its ``stae.*`` parameters; :class:`ArtifactError` naming ``source``
    when it carries none (a repository written by another tool, or an older `stae triton`)."""
    parameters: Mapping[str, Any] = config.get("parameters") or {}
    props = {key: str(entry.get("string_value", "")) for key, entry in parameters.items()
             if key.startswith(METADATA_PARAMETER_PREFIX)}
    if not props:
        raise ArtifactError(f"{source}: its config carries no STAE metadata (parameters "
                            f"'{METADATA_PARAMETER_PREFIX}*'); serve a repository written by "
                            f"`stae triton` of this version")
    return ArtifactMetadata.from_props(props, source)


def config_pbtxt(metadata: ArtifactMetadata, options: TritonOptions, platform: str,
                 source: str) -> str:
    """The model's ``config.pbtxt`` (protobuf text of Triton's ModelConfig) for the Triton copy
    described by ``metadata``, which its parameters carry."""
    spec = metadata.spec
    controls = set(CONTROL_INPUTS)
    data_in = [t for t in spec.data_inputs if t.name not in controls]

    def tensor(t: TensorSpec) -> str:
        return (f'  {{ name: "{t.name}" data_type: {TRITON_TYPES[t.dtype]} '
                f'dims: {_dims(t)} }}')

    states = ",\n".join(
        f'    {{\n      input_name: "{p.input.name}"\n      output_name: "{p.output.name}"\n'
        f'      data_type: TYPE_FP32\n      dims: {_dims(p.input)}\n'
        f'      initial_state {{ data_type: TYPE_FP32 dims: {_dims(p.input)} zero_data: true '
        f'name: "zeros" }}\n    }}' for p in spec.state)
    if options.strategy == "direct":
        strategy = f"  direct {{ max_queue_delay_microseconds: {options.max_queue_delay_us} }}"
    else:
        strategy = (f"  oldest {{\n    max_candidate_sequences: "
                    f"{options.max_candidate_sequences or options.max_batch}\n"
                    f"    max_queue_delay_microseconds: {options.max_queue_delay_us}\n  }}")
    platform_line = ('backend: "onnxruntime"' if platform == "onnxruntime"
                     else 'platform: "tensorrt_plan"')
    return "\n".join([
        f"# Written by `stae triton` from {source}. State entries come from the protocol stored",
        "# in the model; Triton pairs state inputs with outputs by sorted name, which `stae",
        "# triton` checked holds for these names: do not rename them. Growable state memory",
        "# is deliberately not enabled.",
        f'name: "{options.model_name}"',
        platform_line,
        f"max_batch_size: {options.max_batch}",
        "input [\n" + ",\n".join(tensor(t) for t in data_in) + "\n]",
        "output [\n" + ",\n".join(tensor(t) for t in spec.data_outputs) + "\n]",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {options.max_sequence_idle_us}",
        control_inputs_pbtxt("fp32", spec.tensor(CORRID).dtype),
        "  state [",
        states,
        "  ]",
        strategy,
        "}",
        f"instance_group [ {{ count: {options.instances} kind: {KINDS[options.kind]} }} ]",
        metadata_parameters_pbtxt(metadata),
        "",
    ])


def write_repository(source: str | Path, output: str | Path, options: TritonOptions,
                     force: bool = False) -> TritonRepository:
    """Write ``<output>/<model_name>/`` for ``source`` (.onnx, or .engine/.plan + sidecar).

    Refuses (:class:`OutputExistsError`) an existing model directory unless ``force``; nothing
    is written before every check has passed.
    """
    source, output = Path(source), Path(output)
    model_dir = output / options.model_name
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: the model repository must be a directory, not a file")
    if model_dir.exists() and not force:
        raise OutputExistsError(f"{model_dir} already exists; pass --force to overwrite it")
    suffix = source.suffix.lower()
    if suffix == ONNX_SUFFIX:
        onnx_model, metadata = load_onnx_source(source, options)
        platform, model_name = "onnxruntime", "model.onnx"
    elif suffix in ENGINE_SUFFIXES:
        onnx_model, metadata = None, load_engine_source(source, options)
        platform, model_name = "tensorrt_plan", "model.plan"
    else:
        raise ConfigError(f"{source}: expected an ONNX file (.onnx) or a TensorRT engine "
                          f"({', '.join(ENGINE_SUFFIXES)}) with its .json sidecar")
    spec = metadata.spec
    per_stream = state_bytes_per_stream(spec)
    pool = cuda_pool_bytes(spec, options.sequence_slots)

    with staged_model_dir(model_dir) as staging:
        model_file = staging / VERSION_DIR / model_name
        if onnx_model is not None:
            save_model(onnx_model, model_file)
        else:
            shutil.copyfile(source, model_file)
            shutil.copyfile(engine_sidecar_path(source), engine_sidecar_path(model_file))
        config_text = config_pbtxt(metadata, options, platform, source.name)
        _parse_with_triton_schema(config_text)
        (staging / "config.pbtxt").write_text(config_text)
        (staging / "README.md").write_text(
            readme_text(spec, options, output, platform, source.name, per_stream, pool))
    return TritonRepository(model_dir, model_dir / "config.pbtxt",
                            model_dir / VERSION_DIR / model_name, model_dir / "README.md",
                            per_stream, pool)


def tritonserver_command(output: Path, pool_bytes: int) -> str:
    """The tritonserver line for the repository with a CUDA pool big enough for the state."""
    return (f"tritonserver --model-repository={output.resolve()} "
            f"--cuda-memory-pool-byte-size=0:{max(pool_bytes, TRITON_DEFAULT_POOL_BYTES)}")


def readme_text(spec: IOSpec, options: TritonOptions, output: Path, platform: str, source: str,
                per_stream: int, pool: int) -> str:
    """The model directory's README: how to serve it, the memory it needs, how to call it."""
    frame, prediction = spec.frame, spec.prediction
    states = "\n".join(f"| `{p.input.name}` | `{p.output.name}` | {list(p.input.per_sample_shape)} "
                       f"| {int(np.prod(p.input.per_sample_shape)) * 4:,} |" for p in spec.state)
    slots_per = "max_batch_size" if options.strategy == "direct" else "max_candidate_sequences"
    backend = ("onnxruntime backend (CUDA on KIND_GPU)" if platform == "onnxruntime" else
               "TensorRT backend: the plan must come from the same TensorRT version and GPU "
               "model as the server's")
    return f"""# `{options.model_name}`: STAE served by Triton with implicit state

Written by `stae triton {source}`; {backend}.
One request = one frame of one stream; Triton's sequence batcher keeps each stream's recurrent state on the server between requests.

```bash
{tritonserver_command(output, pool)}
python -m stae_deploy.serving.triton_client --url localhost:8001 --model {options.model_name} \\
    --repository {output.resolve()} --input clip.mp4
```

The client (the `triton` extra: `pip install 'stae-deploy[triton]'`) reads the frame input's
name and size from `{VERSION_DIR}/`, prepares each frame as `stae run` does, sends one request per
frame as one sequence and prints the PSNR of each prediction against the next frame.

## Memory

The CUDA memory pool (`--cuda-memory-pool-byte-size=0:<bytes>`, per GPU; repeat the flag for
GPUs 1, 2, ...) must hold at least streams x state bytes per stream x 2 (an input and an output
buffer per state): {options.sequence_slots} streams x {per_stream:,} B x 2 = **{pool:,} bytes**
({pool / 2 ** 20:.1f} MiB) for this config ({options.sequence_slots} streams = {slots_per} x
{options.instances} instance(s)). The command above sets the larger of that and Triton's
default 64 MiB; leave room for the frames too.

| state input | state output | dims (per stream) | bytes |
|---|---|---|---|
{states}

## Requests

* input `{frame.name}`: {list(frame.per_sample_shape)} float32 per stream (batch 1 per request):
  RGB in [0, 1], channels first, centre-cropped to the model's aspect and area-resized.
* output `{prediction.name}`: the predicted next frame, same layout; `{CORRID_OUT}` echoes the
  sequence id (check it), `END_OUT` the end flag.
* Every request carries `sequence_id` (non-zero, below 2**63: the model reads it as int64);
  the first of a stream `sequence_start=True`, the last `sequence_end=True`. A stream idle
  for {options.max_sequence_idle_us / 1e6:g} s loses its slot and state; restart it with
  `sequence_start=True`.
* Strategy `{options.strategy}`, max_batch_size {options.max_batch}, {options.instances} x
  {KINDS[options.kind]}.

## Sequence controls

The model in `{VERSION_DIR}/` has the inputs START, READY, END (float32, 0/1) and CORRID (int64)
that Triton fills in: state is multiplied by (1 - START), so a stream starts from zeros; a batch
slot with READY = 0 returns its state unchanged. Triton pairs state inputs with outputs by the
sorted order of their names, not by the pairs in `config.pbtxt` (server issue #8586); `stae
triton` refused names that would mispair. Do not edit the state names, and do not add
`use_growable_memory`.
"""


def _dims(t: TensorSpec) -> str:
    return "[ " + ", ".join(str(d) for d in t.per_sample_shape) + " ]"


def _parse_with_triton_schema(text: str) -> None:
    """Parse ``text`` as Triton's ModelConfig when tritonclient is installed (the `triton`
    extra): a misspelt field is a bug here, not something to ship."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return
    config = model_config_pb2.ModelConfig()  # pyright: ignore[reportAttributeAccessIssue]
    text_format.Parse(text, config)


@contextmanager
def staged_model_dir(model_dir: Path) -> Iterator[Path]:
    """A staging folder (with ``VERSION_DIR/`` made) beside the repository, renamed to
    ``model_dir`` when the block ends cleanly and removed when it raises: a killed run never
    leaves a half-written model that Triton would try to load."""
    output = model_dir.parent
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.{model_dir.name}.",
                                    suffix=".partial", dir=output.parent))
    try:
        staging.chmod(0o755)      # mkdtemp makes it 0700; the server may run as another user
        (staging / VERSION_DIR).mkdir()
        yield staging
        output.mkdir(parents=True, exist_ok=True)
        _replace_dir(staging, model_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing an existing ``target`` (already allowed)."""
    if target.exists():
        trash = staging.with_name(staging.name + ".replaced")   # outside the repository
        os.replace(target, trash)
        os.replace(staging, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, target)
