"""``stae info``: what a model is, how big it is, what it costs, and its state protocol."""
from __future__ import annotations

import argparse
import json

from stae_deploy.cli.args import add_model_source, model_source


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model source and --json."""
    add_model_source(parser)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    """Print the model's :class:`ModelSummary` as text, or as JSON with --json."""
    from stae_deploy.stae_ref.model_summary import summarize_model

    summary = summarize_model(model_source(args))
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    config = summary.config
    height, width = config.frame_size
    print(f"STAE  {height}x{width}  cell={config.cell}  head={config.head}  "
          f"layers={config.layers}  hidden={config.hidden}  tau={config.tau}  "
          f"kernel={'x'.join(map(str, config.kernel))}  clip_len={config.clip_len}")
    print(f"  stem: space-to-depth x{config.patch}, then {config.stride2_stages} stride-2 stages "
          f"(total stride {config.total_stride}); encoder channels {list(config.encoder_channels)}")
    print(f"  latent (C, T, h, w): {tuple(config.latent_shape)}")
    print(f"  parameters: {summary.params:,}   GFLOP/step: {summary.gflop_per_step:.2f}   "
          f"state: {summary.state_mb:.2f} MB (float32)")
    print("  state protocol (input -> output):")
    for entry in summary.inputs():
        arrow = f" -> {entry['output']}" if entry["output"] else "   (data input)"
        print(f"    {entry['name']:<14} {str(tuple(entry['shape'])):<28} {entry['dtype']}{arrow}")
    for tensor in summary.spec.data_outputs:
        print(f"    {tensor.name:<14} {str(tuple(tensor.shape)):<28} {tensor.dtype}   (data output)")
    return 0
