"""``stae build MODEL.onnx -o stae.engine [--max-batch 8] [--timing-cache F]``: a strongly typed
TensorRT engine and its JSON sidecar (``stae_deploy.export.build_engine``). Prints the equivalent
``trtexec`` line first, so a machine without TensorRT still gets the command to run elsewhere."""
from __future__ import annotations

import argparse
import json
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stae_deploy.export.build_engine import BuildConfig

    parser.add_argument("model", help="an ONNX file from `stae export`, `stae fp16` or INT8")
    parser.add_argument("--output", "-o", required=True, help="the engine file to write")
    parser.add_argument("--workspace-mib", type=int, default=BuildConfig.workspace_mib)
    parser.add_argument("--opt-batch", type=int, default=BuildConfig.opt_batch)
    parser.add_argument("--max-batch", type=int, default=BuildConfig.max_batch)
    parser.add_argument("--timing-cache", default=None, help="timing cache file (reused, updated)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.export.build_engine import BuildConfig, artifact_trtexec_command, build_engine

    config = BuildConfig(workspace_mib=args.workspace_mib, opt_batch=args.opt_batch,
                         max_batch=args.max_batch, timing_cache=args.timing_cache)
    print("equivalent trtexec command:\n  "
          + artifact_trtexec_command(args.model, args.output, config), file=sys.stderr)
    start = time.perf_counter()
    engine = build_engine(args.model, args.output, config, force=args.force)
    print(json.dumps({"engine": str(engine), "build_s": round(time.perf_counter() - start, 1)}))
    return 0
