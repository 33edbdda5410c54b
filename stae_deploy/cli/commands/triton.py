"""``stae triton MODEL.onnx|MODEL.engine -o model_repository/``: an NVIDIA Triton model
repository (sequence batcher, implicit state) for a dynamic-batch STAE artifact
(``stae_deploy.serving.triton_repository``).

Prints how to serve it on stderr and, on stdout, one JSON line: the files written, the streams
it holds state for and the CUDA memory pool that state needs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stae_deploy.serving.triton_python_repository import write_python_repository
from stae_deploy.serving.triton_repository import (KINDS, STRATEGIES, TritonOptions,
                                                   tritonserver_command, write_repository)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, the repository folder and every :class:`TritonOptions` field."""
    parser.add_argument("model", help="a dynamic-batch ONNX file (`stae export --dynamic-batch`)"
                                      " or an engine built from a model.onnx this command wrote")
    parser.add_argument("--output", "-o", required=True, help="the model repository directory")
    defaults = TritonOptions()
    parser.add_argument("--model-name", default=defaults.model_name,
                        help="the model's name and directory in the repository")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch,
                        help="max_batch_size: sequence slots per instance")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy,
                        help="direct: a fixed batch slot per stream; oldest: streams share slots")
    parser.add_argument("--max-candidate-sequences", type=int, default=None,
                        help="streams held per instance with --strategy oldest; unset: --max-batch")
    parser.add_argument("--max-queue-delay-us", type=int, default=defaults.max_queue_delay_us,
                        help="how long a batch may wait for other streams' frames (--strategy "
                             "oldest; direct ignores it without a minimum slot utilisation)")
    parser.add_argument("--max-sequence-idle-us", type=int,
                        default=defaults.max_sequence_idle_us,
                        help="a stream silent this long loses its slot and state")
    parser.add_argument("--instances", type=int, default=defaults.instances,
                        help="model instances (per GPU with --kind gpu)")
    parser.add_argument("--kind", choices=sorted(KINDS), default=defaults.kind,
                        help="instance_group kind: KIND_GPU or KIND_CPU")
    parser.add_argument("--rename-states", action="store_true",
                        help="rename state tensors to state_in.X/state_out.X so Triton's "
                             "sorted-name pairing holds (ONNX sources)")
    parser.add_argument("--backend", choices=("onnxruntime", "python"), default="onnxruntime",
                        help="onnxruntime: Triton's onnxruntime/TensorRT backend, state kept by the "
                             "sequence batcher (GPU servers); python: Triton's Python backend "
                             "stepping the ONNX with this project's runtime (CPU servers and "
                             "`stae serve`)")
    parser.add_argument("--threads", type=int, default=0,
                        help="with --backend python: onnxruntime threads in the server (0: "
                             "onnxruntime's default)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing <output>/<model-name>")


def run(args: argparse.Namespace) -> int:
    """Write the repository; print how to serve it (stderr) and what was written (JSON)."""
    options = TritonOptions(
        model_name=args.model_name, max_batch=args.max_batch, strategy=args.strategy,
        max_candidate_sequences=args.max_candidate_sequences,
        max_queue_delay_us=args.max_queue_delay_us,
        max_sequence_idle_us=args.max_sequence_idle_us, instances=args.instances,
        kind=args.kind, rename_states=args.rename_states)
    if args.backend == "python":
        repo = write_python_repository(args.model, args.output, options, args.threads, args.force)
        print(f"wrote {repo.model_dir} (Triton Python backend); serve it with:\n  stae serve "
              f"{args.output}", file=sys.stderr)
        print(json.dumps({"model_dir": str(repo.model_dir), "config": str(repo.config),
                          "model": str(repo.model_file), "backend": "python",
                          "state_bytes_per_stream": repo.state_bytes_per_stream}))
        return 0
    repo = write_repository(args.model, args.output, options, force=args.force)
    command = tritonserver_command(Path(args.output), repo.pool_bytes)
    print(f"wrote {repo.model_dir}: state {repo.state_bytes_per_stream:,} B per stream; the CUDA "
          f"memory pool needs >= {options.sequence_slots} streams x "
          f"{repo.state_bytes_per_stream:,} B x 2 = {repo.pool_bytes:,} B\nserve it with:\n  "
          f"{command}", file=sys.stderr)
    print(json.dumps({"model_dir": str(repo.model_dir), "config": str(repo.config),
                      "model": str(repo.model_file), "streams": options.sequence_slots,
                      "state_bytes_per_stream": repo.state_bytes_per_stream,
                      "cuda_memory_pool_bytes": repo.pool_bytes, "tritonserver": command}))
    return 0
