"""``stae bench``: per-step latency, GFLOP/s and peak memory of every backend in one run.

    stae bench [--checkpoint CKPT | --config cfg.json | --models all|NAME... [--paper-config]]
               [--frame-sizes 256 512] [--batch N]
               [--steps 20] [--warmup 3] [--threads N] [--backends eager plain fast fp16 int8]
               [--json PATH|-] [--markdown PATH] [--plot PATH] [--work-dir DIR] [--no-memory]
               [--profile] [--force]

Prints the table (Table 2 first with ``--models``) and writes the files asked for; what is
measured and the report's fields: ``stae_deploy.benchmarks.bench``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from stae_deploy.benchmarks.bench_backends import BACKENDS
from stae_deploy.cli.args import add_model_source, frame_size, model_source
from stae_deploy.runtime.files import refuse_overwrite


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The model source (``stae_deploy.cli.args``) and the bench's own options."""
    add_model_source(parser)
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="bench these configs of stae_ref/models/ ('all': every one) and "
                             "print the paper's Table 2 for this machine")
    parser.add_argument("--paper-config", action="store_true",
                        help="with --models: run each at the paper's Table 2 configuration "
                             "instead of its config file's (4 layers x 64 channels; STAE on a "
                             "16x16 latent at 512x512, the others on 32x32), random weights, "
                             "no quality columns")
    parser.add_argument("--frame-sizes", type=frame_size, nargs="+", metavar="N|HxW",
                        default=[(256, 256), (512, 512)],
                        help="frame sizes to run the model's weights at")
    parser.add_argument("--batch", type=int, default=1,
                        help="frames per step (above 1 the graphs get a dynamic batch axis)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after the warm-up")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="intra-op threads of torch, onnxruntime and the matmul peak")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS),
                        help="; ".join(f"{k}: {kind.label}" for k, kind in BACKENDS.items()))
    parser.add_argument("--json", metavar="PATH",
                        help="write the report as JSON ('-': stdout, the table then on stderr)")
    parser.add_argument("--markdown", metavar="PATH", help="write the table to this file")
    parser.add_argument("--plot", metavar="PATH",
                        help="PNG: median latency of each backend at each frame size, p90 whiskers")
    parser.add_argument("--work-dir", metavar="DIR",
                        help="build the artifacts here and keep them (default: a temporary folder)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-RSS subprocesses (rows carry peak_rss_mb: null)")
    parser.add_argument("--profile", action="store_true",
                        help="onnxruntime's kernel time per op type (op_time_share in the JSON)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing --json/--markdown/--plot files and work-dir files")


def run(args: argparse.Namespace) -> int:
    """Bench every frame size, print the table, write the files asked for; exit status."""
    from stae_deploy.benchmarks.bench import BenchSettings, report_markdown, run_bench
    from stae_deploy.benchmarks.bench_report import save_latency_chart, write_text

    settings = BenchSettings(
        frame_sizes=tuple(args.frame_sizes), source=model_source(args),
        models=tuple(args.models or ()), paper_config=args.paper_config, batch=args.batch,
        steps=args.steps, warmup=args.warmup, threads=args.threads, backends=tuple(args.backends),
        memory=not args.no_memory, profile=args.profile, work_dir=args.work_dir,
        force=args.force)
    outputs = {option: refuse_overwrite(path, settings.force) for option, path in
               (("json", args.json), ("markdown", args.markdown), ("plot", args.plot))
               if path not in (None, "-")}
    report = run_bench(settings)
    table, report_json = report_markdown(report), json.dumps(report, indent=2) + "\n"
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        sys.stdout.write(report_json)
    if "json" in outputs:
        write_text(outputs["json"], report_json)
    if "markdown" in outputs:
        write_text(outputs["markdown"], table)
    if "plot" in outputs:
        save_latency_chart(outputs["plot"], report["rows"])
    return 0
