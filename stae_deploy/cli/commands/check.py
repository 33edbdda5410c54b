"""``stae check MODEL.onnx [--checkpoint CKPT] --steps N [--json]``: all export checks plus a
parity rollout on real footage against the reference; exit 0 when everything passes, 1 if not."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from stae_deploy.cli.args import add_parity_check, parity_settings

if TYPE_CHECKING:
    from stae_deploy.verify.checks import CheckReport


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the ONNX file to check")
    parser.add_argument("--checkpoint", default=None,
                        help="the checkpoint the model was exported from (not needed for "
                             "seeded random weights: the seed is in the metadata)")
    add_parity_check(parser, default_steps=100)


def run(args: argparse.Namespace) -> int:
    from stae_deploy.verify.check_run import run_checks

    report = run_checks(args.model, parity_settings(args), checkpoint=args.checkpoint)
    return print_check_report(report, args.json)


def print_check_report(report: CheckReport, as_json: bool) -> int:
    """Print ``report`` as text or JSON; returns the process exit
    code (0 when every check passed, else 1). Shared by every command that checks a graph."""
    from stae_deploy.verify.check_run import format_check_report

    print(json.dumps(report.to_dict(), indent=2) if as_json else format_check_report(report))
    return 0 if report.passed else 1
