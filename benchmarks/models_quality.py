"""Held-out quality of every trained model of ``stae_ref/models/``, side by side: Table 2's
quality column, with the closed-loop horizons and the frame-by-frame comparison with STAE.

    python -m stae_deploy.benchmarks.models_quality [--markdown F] [--json F] [--plot F] [--force]

Reads each model's committed ``eval.json`` (``stae eval --long-stream 1000``: teacher-forced
one-step PSNR and SSIM on the held-out frames of every clip, closed-loop PSNR at horizons 1..4,
and a 1000-step stream per clip; the model folders are those of ``stae bench --models``); a model
with no checkpoint folder is listed as not trained. Nothing is run: the numbers are the committed
evaluations. Per model: the PSNR (SSIM) gain over copy-last per clip, the closed-loop PSNR per
horizon, ``stae_deploy.benchmarks.bench_models.paired_psnr_vs_stae`` (model minus STAE on the
same frames, with a bootstrap interval over frames and on how many frames the model is ahead), and
the long stream:
the gain over copy-last and the largest |state| value in the first and the last 100 steps (a
camera that runs for hours needs both to stay put). ``--plot`` writes a PNG: the per-clip gains
as grouped bars, the closed-loop PSNR against the horizon (copy-last included) and the largest
|state| per 100 steps of the long stream.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stae_deploy.benchmarks.bench_models import (PAPER_NAMES, available_models, committed_eval,
                                 held_out_quality, paired_psnr_vs_stae)
from stae_deploy.benchmarks.bench_report import write_text
from stae_deploy.runtime.errors import ConfigError, exit_code_of
from stae_deploy.runtime.files import refuse_overwrite
from stae_deploy.runtime.plots import save_figure


def model_quality(name: str) -> dict[str, Any] | None:
    """One model's row: per_clip (``stae_deploy.benchmarks.bench_models.held_out_quality``),
    horizon_psnr_db [model per horizon], copy_last_horizon_psnr_db, vs_stae (None for STAE
    itself), long_stream (per clip: steps, gain_db_per_window, state_max_abs_per_window, 100-step
    windows; None if its eval has no long stream); None when it is not trained."""
    report = committed_eval(name)
    if report is None:
        return None
    keys = ("steps", "gain_db_per_window", "state_max_abs_per_window")
    long_stream = report.get("long_stream")
    return {"per_clip": held_out_quality(name),
            "horizon_psnr_db": [entry["model"] for entry in report["horizon_psnr_db"]],
            "copy_last_horizon_psnr_db": [entry["copy_last"]
                                          for entry in report["horizon_psnr_db"]],
            "vs_stae": paired_psnr_vs_stae(name),
            "long_stream": None if long_stream is None else
            {clip: {key: values[key] for key in keys} for clip, values in long_stream.items()}}


def long_stream_summary(long_stream: dict[str, Any]) -> dict[str, float]:
    """Over the clips of a ``model_quality`` long_stream: gain_first_db / gain_last_db, the mean
    gain over copy-last (dB) of the first and the last 100-step window, and state_first /
    state_last, the largest |state| value in those windows."""
    clips = list(long_stream.values())
    return {"gain_first_db": sum(c["gain_db_per_window"][0] for c in clips) / len(clips),
            "gain_last_db": sum(c["gain_db_per_window"][-1] for c in clips) / len(clips),
            "state_first": max(c["state_max_abs_per_window"][0] for c in clips),
            "state_last": max(c["state_max_abs_per_window"][-1] for c in clips)}


def quality_markdown(rows: dict[str, dict[str, Any] | None]) -> str:
    """The side-by-side table: one line per model, untrained models said so, then copy-last."""
    trained = [row for row in rows.values() if row]
    clips = list(trained[0]["per_clip"]) if trained else []
    horizons = len(trained[0]["horizon_psnr_db"]) if trained else 0
    steps = next((next(iter(row["long_stream"].values()))["steps"] for row in trained
                  if row["long_stream"]), 0)
    columns = ["model", *(f"{clip} gain dB (SSIM)" for clip in clips),
               *(f"closed loop h{h} dB" for h in range(1, horizons + 1)),
               "vs STAE, same frames: dB [95% CI], frames ahead",
               f"{steps}-step stream: gain dB, first -> last 100 steps",
               "largest abs(state), first -> last 100 steps"]
    table = [columns, ["---"] * len(columns)]
    for name, row in rows.items():
        label = PAPER_NAMES.get(name, name)
        if row is None:
            table.append([label, "not trained"] + [""] * (len(columns) - 2))
            continue
        vs, gains = row["vs_stae"], row["per_clip"]
        stream = long_stream_summary(row["long_stream"]) if row["long_stream"] else None
        table.append([label,
                      *(f"{gains[clip]['gain_db']:+.2f} ({gains[clip]['ssim_gain']:+.3f})"
                        for clip in clips),
                      *(f"{psnr:.2f}" for psnr in row["horizon_psnr_db"]),
                      "(reference)" if vs is None else
                      f"{vs['mean_db']:+.2f} [{vs['ci95_db'][0]:+.2f}, {vs['ci95_db'][1]:+.2f}], "
                      f"{vs['better']}/{vs['targets']}",
                      "not measured" if stream is None else
                      f"{stream['gain_first_db']:+.2f} -> {stream['gain_last_db']:+.2f}",
                      "" if stream is None else
                      f"{stream['state_first']:.3g} -> {stream['state_last']:.3g}"])
    if trained:
        table.append(["copy-last", *[""] * len(clips),
                      *(f"{psnr:.2f}" for psnr in trained[0]["copy_last_horizon_psnr_db"]),
                      "", "", ""])
    return "".join("| " + " | ".join(cells) + " |\n" for cells in table)


def save_quality_plot(path: Path, rows: dict[str, dict[str, Any] | None]) -> Path:
    """PNG, three panels, every trained model: per-clip PSNR gain over copy-last (bars, one group
    per clip), the closed-loop PSNR per horizon (lines, copy-last dashed) and the largest |state|
    per 100 steps of the long stream (the largest over clips, log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = {name: row for name, row in rows.items() if row}
    if not trained:
        raise ConfigError("--plot: no model of stae_ref/models/ is trained; nothing to plot")
    clips = list(next(iter(trained.values()))["per_clip"])
    figure, (bars, lines, states) = plt.subplots(1, 3, figsize=(20, 5), dpi=110)
    width = 0.8 / len(trained)
    for index, (name, row) in enumerate(trained.items()):
        offset = (index - (len(trained) - 1) / 2) * width
        bars.bar([c + offset for c in range(len(clips))],
                 [row["per_clip"][clip]["gain_db"] for clip in clips], width,
                 label=PAPER_NAMES.get(name, name))
        horizons = range(1, len(row["horizon_psnr_db"]) + 1)
        lines.plot(horizons, row["horizon_psnr_db"], marker="o", label=PAPER_NAMES.get(name, name))
        if row["long_stream"]:
            per_window = zip(*(c["state_max_abs_per_window"] for c in row["long_stream"].values()))
            state_max = [max(window) for window in per_window]
            states.plot([100 * (w + 1) for w in range(len(state_max))], state_max, marker="o",
                        label=PAPER_NAMES.get(name, name))
    copy_last = next(iter(trained.values()))["copy_last_horizon_psnr_db"]
    lines.plot(range(1, len(copy_last) + 1), copy_last, "k--", label="copy-last")
    bars.set_xticks(range(len(clips)), clips)
    lines.set_xticks(range(1, len(copy_last) + 1))
    bars.set(ylabel="PSNR gain over copy-last (dB)",
             title="Held-out one-step gain, teacher-forced, per clip")
    lines.set(xlabel="closed-loop horizon (frames ahead)", ylabel="PSNR (dB)",
              title="Closed loop: the model feeds on its own predictions")
    states.set(xlabel="steps into the stream (end of each 100-step window)",
               ylabel="largest |state| value in the window", yscale="log",
               title="Long teacher-forced stream: does the state stay bounded?")
    for axes in (bars, lines, states):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return save_figure(figure, path)


@dataclass(frozen=True)
class QualityFiles:
    """Where the report goes besides stdout (None: not written).

    markdown: the table; json: every model's row; plot: the PNG of :func:`save_quality_plot`;
    force: overwrite files that exist (refused otherwise, before anything is read).
    """

    markdown: Path | None = None
    json: Path | None = None
    plot: Path | None = None
    force: bool = False


def run(files: QualityFiles) -> int:
    """Read every model's evaluation, print the table, write the files asked for."""
    outputs = {key: refuse_overwrite(path, files.force) for key, path in
               (("markdown", files.markdown), ("json", files.json), ("plot", files.plot)) if path}
    rows = {name: model_quality(name) for name in available_models()}
    table = quality_markdown(rows)
    print(table)
    if "markdown" in outputs:
        write_text(outputs["markdown"], table)
    if "json" in outputs:
        write_text(outputs["json"], json.dumps(rows, indent=2) + "\n")
    if "plot" in outputs:
        save_quality_plot(outputs["plot"], rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module doc); 2 on a user error."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, metavar="PATH",
                        help="write the table to this file")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every model's row as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="PNG: per-clip gains and closed-loop PSNR")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)
    return exit_code_of("models_quality", lambda: run(
        QualityFiles(markdown=args.markdown, json=args.json, plot=args.plot, force=args.force)))


if __name__ == "__main__":
    sys.exit(main())
