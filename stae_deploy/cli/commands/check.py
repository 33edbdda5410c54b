"""``stae check MODEL.onnx [--checkpoint CKPT] --steps N [--json]``: all export checks plus a
parity rollout on real footage against the reference; exit 0 when everything passes, 1 if not."""
from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from stae_deploy.cli.args import add_parity_check, parity_settings

if TYPE_CHECKING:
    from stae_deploy.runtime.onnx_artifact import OnnxArtifact
    from stae_deploy.verify.check_run import ParitySettings
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


def add_variant_check(parser: argparse.ArgumentParser, verb: str) -> None:
    """--force, --checkpoint, --no-check and the parity group of a command that writes a
    precision variant of ``model`` and then checks it (``verb``: "converting", "quantising")."""
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    parser.add_argument("--checkpoint", default=None,
                        help="checkpoint the model came from (without it, and without seeded "
                             "weights, the check compares with the FP32 graph it came from)")
    parser.add_argument("--no-check", action="store_true", help=f"skip the checks after {verb}")
    add_parity_check(parser, default_steps=8)


def check_variant(args: argparse.Namespace, variant: OnnxArtifact,
                  checks: ParitySettings | None) -> int:
    """Check ``variant``, just written from ``args.model``, against the reference it came from
    (``checks`` None: no check, exit 0); print the report and return the exit code."""
    from stae_deploy.verify.check_run import run_checks
    from stae_deploy.verify.reference import reference_or_source

    if checks is None:
        return 0
    reference = reference_or_source(args.model, args.checkpoint)
    return print_check_report(run_checks(variant, checks, reference=reference), args.json)
