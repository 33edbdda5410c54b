"""``stae info``: what a model is, how big it is, what it costs, and its state protocol."""
from __future__ import annotations

import argparse
import json

from stae_deploy.cli.args import add_model_source, model_source
from stae_deploy.stae_ref.model_source import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_source(parser)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from stae_deploy.stae_ref.model_cost import gflop_per_step, parameter_count

    model, provenance = load_model(model_source(args))
    config = model.config
    spec = model.spec()
    state = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
              "output": pair.output.name if pair else None}
             for t, pair in [(t, None) for t in spec.data_inputs]
             + [(p.input, p) for p in spec.state]]
    report = {
        "config": config.to_dict(),
        "checkpoint_sha256": provenance.get("checkpoint_sha256"),
        "total_stride": config.total_stride,
        "latent_shape": list(config.latent_shape),
        "params": parameter_count(model),
        "gflop_per_step": round(gflop_per_step(model, config.frame_size), 3),
        "state_mb": round(sum(_nbytes(p.input.shape) for p in spec.state) / 2 ** 20, 3),
        "state": state,
        "outputs": [t.to_dict() for t in spec.outputs],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    height, width = config.frame_size
    print(f"STAE  {height}x{width}  cell={config.cell}  head={config.head}  "
          f"layers={config.layers}  hidden={config.hidden}  tau={config.tau}  "
          f"kernel={'x'.join(map(str, config.kernel))}  clip_len={config.clip_len}")
    print(f"  stem: space-to-depth x{config.patch}, then {config.stride2_stages} stride-2 stages "
          f"(total stride {config.total_stride}); encoder channels {list(config.encoder_channels)}")
    print(f"  latent (C, T, h, w): {tuple(config.latent_shape)}")
    print(f"  parameters: {report['params']:,}   GFLOP/step: {report['gflop_per_step']:.2f}   "
          f"state: {report['state_mb']:.2f} MB (float32)")
    print("  state protocol (input -> output):")
    for entry in state:
        arrow = f" -> {entry['output']}" if entry["output"] else "   (data input)"
        print(f"    {entry['name']:<14} {str(tuple(entry['shape'])):<28} {entry['dtype']}{arrow}")
    for tensor in spec.data_outputs:
        print(f"    {tensor.name:<14} {str(tuple(tensor.shape)):<28} {tensor.dtype}   (data output)")
    return 0


def _nbytes(shape: tuple) -> int:
    count = 4
    for dim in shape:
        count *= int(dim)
    return count
