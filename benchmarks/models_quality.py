"""Held-out quality of every trained model of ``stae_ref/models/``, side by side: Table 2's
quality column, with the closed-loop horizons and the frame-by-frame comparison with STAE.

    python benchmarks/models_quality.py [--markdown F] [--json F] [--plot F] [--force]

Reads each model's committed ``eval.json`` (``stae eval``: teacher-forced one-step PSNR and SSIM
on the held-out frames of every clip, and closed-loop PSNR at horizons 1..4; the model folders
are those of ``stae bench --models``); a model with no checkpoint folder is listed as not trained.
Nothing is run: the numbers are the committed evaluations. Per model: the PSNR (SSIM) gain over
copy-last per clip, the closed-loop PSNR per horizon, and
``export.bench_models.paired_psnr_vs_stae`` (model minus STAE on the same frames, with a bootstrap
interval over frames and on how many frames the model is ahead). ``--plot`` writes a PNG: the
per-clip gains as grouped bars and the closed-loop PSNR against the horizon, copy-last included.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from export.bench_models import (PAPER_NAMES, available_models, committed_eval,
                                 held_out_quality, paired_psnr_vs_stae)
from export.bench_report import write_text
from runtime.errors import ConfigError, StaeError
from runtime.files import refuse_overwrite
from runtime.plots import save_figure


def model_quality(name: str) -> dict[str, Any] | None:
    """One model's row: per_clip (``export.bench_models.held_out_quality``), horizon_psnr_db
    [model per horizon], copy_last_horizon_psnr_db, vs_stae (None for STAE itself); None when it
    is not trained."""
    report = committed_eval(name)
    if report is None:
        return None
    return {"per_clip": held_out_quality(name),
            "horizon_psnr_db": [entry["model"] for entry in report["horizon_psnr_db"]],
            "copy_last_horizon_psnr_db": [entry["copy_last"]
                                          for entry in report["horizon_psnr_db"]],
            "vs_stae": paired_psnr_vs_stae(name)}


def quality_markdown(rows: dict[str, dict[str, Any] | None]) -> str:
    """The side-by-side table: one line per model, untrained models said so, then copy-last."""
    trained = [row for row in rows.values() if row]
    clips = list(trained[0]["per_clip"]) if trained else []
    horizons = len(trained[0]["horizon_psnr_db"]) if trained else 0
    columns = ["model", *(f"{clip} gain dB (SSIM)" for clip in clips),
               *(f"closed loop h{h} dB" for h in range(1, horizons + 1)),
               "vs STAE, same frames: dB [95% CI], frames ahead"]
    table = [columns, ["---"] * len(columns)]
    for name, row in rows.items():
        label = PAPER_NAMES.get(name, name)
        if row is None:
            table.append([label, "not trained"] + [""] * (len(columns) - 2))
            continue
        vs, gains = row["vs_stae"], row["per_clip"]
        table.append([label,
                      *(f"{gains[clip]['gain_db']:+.2f} ({gains[clip]['ssim_gain']:+.3f})"
                        for clip in clips),
                      *(f"{psnr:.2f}" for psnr in row["horizon_psnr_db"]),
                      "(reference)" if vs is None else
                      f"{vs['mean_db']:+.2f} [{vs['ci95_db'][0]:+.2f}, {vs['ci95_db'][1]:+.2f}], "
                      f"{vs['better']}/{vs['targets']}"])
    if trained:
        table.append(["copy-last", *[""] * len(clips),
                      *(f"{psnr:.2f}" for psnr in trained[0]["copy_last_horizon_psnr_db"]), ""])
    return "".join("| " + " | ".join(cells) + " |\n" for cells in table)


def save_quality_plot(path: Path, rows: dict[str, dict[str, Any] | None]) -> Path:
    """PNG, two panels: per-clip PSNR gain over copy-last (bars, one group per clip) and the
    closed-loop PSNR per horizon (lines, copy-last dashed), for every trained model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trained = {name: row for name, row in rows.items() if row}
    if not trained:
        raise ConfigError("--plot: no model of stae_ref/models/ is trained; nothing to plot")
    clips = list(next(iter(trained.values()))["per_clip"])
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(14, 5), dpi=110)
    width = 0.8 / len(trained)
    for index, (name, row) in enumerate(trained.items()):
        offset = (index - (len(trained) - 1) / 2) * width
        bars.bar([c + offset for c in range(len(clips))],
                 [row["per_clip"][clip]["gain_db"] for clip in clips], width,
                 label=PAPER_NAMES.get(name, name))
        horizons = range(1, len(row["horizon_psnr_db"]) + 1)
        lines.plot(horizons, row["horizon_psnr_db"], marker="o", label=PAPER_NAMES.get(name, name))
    copy_last = next(iter(trained.values()))["copy_last_horizon_psnr_db"]
    lines.plot(range(1, len(copy_last) + 1), copy_last, "k--", label="copy-last")
    bars.set_xticks(range(len(clips)), clips)
    lines.set_xticks(range(1, len(copy_last) + 1))
    bars.set(ylabel="PSNR gain over copy-last (dB)",
             title="Held-out one-step gain, teacher-forced, per clip")
    lines.set(xlabel="closed-loop horizon (frames ahead)", ylabel="PSNR (dB)",
              title="Closed loop: the model feeds on its own predictions")
    for axes in (bars, lines):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    return save_figure(figure, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--markdown", metavar="PATH", help="write the table to this file")
    parser.add_argument("--json", metavar="PATH", help="write every model's row as JSON")
    parser.add_argument("--plot", metavar="PATH", help="PNG: per-clip gains and closed-loop PSNR")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    args = parser.parse_args(argv)
    try:
        return run(args)
    except StaeError as err:
        print(f"models_quality: error: {err}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Read every model's evaluation, print the table, write the files asked for."""
    outputs = {key: refuse_overwrite(path, args.force) for key, path in
               (("markdown", args.markdown), ("json", args.json), ("plot", args.plot)) if path}
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


if __name__ == "__main__":
    sys.exit(main())
