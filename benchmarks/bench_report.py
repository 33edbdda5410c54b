"""What `stae bench` hands out: a markdown table, the JSON report and a PNG bar chart, each file
written atomically (a partial file never has the final name)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from stae_deploy.runtime.files import atomic_path
from stae_deploy.runtime.plots import save_figure

# (header, row field, format) of the table's measured columns.
COLUMNS = (
    ("median ms", "latency_ms_median", "{:.2f}"),
    ("p90 ms", "latency_ms_p90", "{:.2f}"),
    ("x eager", "ratio_to_pytorch_eager", "{:.2f}"),
    ("GFLOP/step", "gflop_per_step", "{:.3f}"),
    ("GFLOP/s", "gflops_achieved", "{:.1f}"),
    ("of matmul peak", "fraction_of_matmul_peak", "{:.1%}"),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}"),
    ("state MB", "state_mb", "{:.2f}"),
    ("weights MB", "weight_mb", "{:.1f}"),
)
TOP_OP_TYPES = 6


def markdown_table(report: dict[str, Any]) -> str:
    """The report as markdown: a header line, one table row per (frame size, backend), notes,
    and the kernel time per op type when profiled."""
    settings, matmul, machine = report["settings"], report["matmul_gflops"], report["machine"]
    contenders = ", ".join(f"{name} {value:.0f}" for name, value in matmul.items()
                           if name != "best")
    lines = [f"STAE bench: {report['model']}; {report['threads']} threads on {machine['cpu']} "
             f"({machine['cpu_count']} CPUs); {settings['steps']} steps after "
             f"{settings['warmup']} warm-up, backends interleaved step by step; matmul peak "
             f"{matmul['best']:.0f} GFLOP/s ({contenders}; {settings['matmul_size']}x"
             f"{settings['matmul_size']} float32)", "",
             "| backend | frame | batch | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    notes: list[str] = []
    several = len({row["model"] for row in report["rows"]}) > 1
    for row in report["rows"]:
        label = f"{row['model']}: {row['backend']}" if several else row["backend"]
        if row["note"]:
            if row["note"] not in notes:
                notes.append(row["note"])
            label += f" [{notes.index(row['note']) + 1}]"
        if row["error"]:
            cells = [f"not built: {row['error']}"] + [""] * (len(COLUMNS) - 1)
        else:
            cells = ["" if row[key] is None else form.format(row[key]) for _, key, form in COLUMNS]
        lines.append(f"| {label} | {_size(row)} | {row['batch']} | " + " | ".join(cells) + " |")
    lines += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, start=1)]
    lines.append("GFLOP/step: the reference's convolution FLOPs (torch's counter, Conv3d "
                 "time-padding taps included, which the fast graph does not compute) times the "
                 "batch; GFLOP/s = GFLOP/step / median step time.")
    profiled = [row for row in report["rows"] if row.get("op_time_share")]
    if profiled:
        lines += ["", f"| backend | frame | kernel time by op type (top {TOP_OP_TYPES}) |",
                  "|---|---|---|"]
        for row in profiled:
            shares = list(row["op_time_share"].items())[:TOP_OP_TYPES]
            lines.append(f"| {row['backend']} | {_size(row)} | "
                         + ", ".join(f"{op} {share:.0%}" for op, share in shares) + " |")
    return "\n".join(lines) + "\n"


def table_grid(columns: Sequence[Sequence[Any]], rows: Sequence[Any],
               cells: Callable[[Any], list[str]]) -> list[list[str]]:
    """The headers (first item of each column) and ``cells(row)`` of each row: the grid that
    :func:`fixed_width_table` and :func:`markdown_rows` print."""
    return [[column[0] for column in columns]] + [cells(row) for row in rows]


def fixed_width_table(lines: Sequence[Sequence[str]]) -> str:
    """Rows of cells (the first row: the headers), right-aligned in columns, for the terminal."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(line, widths))
                     for line in lines)


def markdown_rows(lines: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells (the first row: the headers) as the lines of a markdown table."""
    return (["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
            + ["| " + " | ".join(line) + " |" for line in lines[1:]])


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as partial:
        partial.write_text(text)
    return path


def save_latency_chart(path: Path, rows: list[dict[str, Any]]) -> Path:
    """PNG of grouped bars: median ms per step of each backend (bar) at each frame size and
    batch (group; per model when the rows hold several), whiskers up to the p90. Rows without a
    latency are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    several = len({row["model"] for row in rows}) > 1
    timed = {(f"{row['model'] + chr(10) if several else ''}{_size(row)}, batch {row['batch']}",
              row["backend"]): row for row in rows if row["latency_ms_median"] is not None}
    groups = list(dict.fromkeys(group for group, _ in timed))
    backends = list(dict.fromkeys(backend for _, backend in timed))
    width = 0.8 / max(len(backends), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 2 + 0.6 * len(groups) * len(backends)), 5),
                                dpi=110)
    for index, backend in enumerate(backends):
        offset = (index - (len(backends) - 1) / 2) * width
        bars = [(g + offset, timed[group, backend]) for g, group in enumerate(groups)
                if (group, backend) in timed]
        medians = [row["latency_ms_median"] for _, row in bars]
        above = [row["latency_ms_p90"] - row["latency_ms_median"] for _, row in bars]
        axes.bar([x for x, _ in bars], medians, width, yerr=[[0.0] * len(bars), above],
                 capsize=3, label=backend)
    axes.set_xticks(range(len(groups)), groups)
    models = ", ".join(dict.fromkeys(row["model"] for row in rows))
    axes.set(ylabel="ms per step (bar: median, whisker: p90)",
             title=f"STAE step latency: {models}")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(figure, path)


def _size(row: dict[str, Any]) -> str:
    height, width = row["frame_size"]
    return f"{height}x{width}"
