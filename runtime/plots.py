"""PNG line plots (per-step PSNR, latency, drift); matplotlib is imported only when plotting."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def save_line_plot(path: str | Path, series: dict[str, Sequence[float]], x_label: str,
                   y_label: str, title: str) -> Path:
    """Write one PNG with a line per ``series`` entry (label -> y values at x = 0, 1, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4), dpi=110)
    for label, values in series.items():
        axes.plot(range(len(values)), list(values), label=label, linewidth=1.4)
    axes.set(xlabel=x_label, ylabel=y_label, title=title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
