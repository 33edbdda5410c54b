"""PNG line plots (per-step PSNR, latency, drift); matplotlib is imported only when plotting."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from stae_deploy.runtime.files import atomic_path

Series = Mapping[str, Sequence[float]]       # label -> y values at x = 0, 1, ...


def save_line_plot(path: str | Path, series: Series, x_label: str,
                   y_label: str, title: str) -> Path:
    """Write one PNG with a line per ``series`` entry (label -> y values at x = 0, 1, ...)."""
    return save_panel_plot(path, {title: (y_label, series)}, x_label)


def save_panel_plot(path: str | Path, panels: Mapping[str, tuple[str, Series]], x_label: str,
                    columns: int = 1) -> Path:
    """Write one PNG of stacked panels: panel title -> (y label, series), sharing the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(8 * columns, 4 * rows), dpi=110,
                                squeeze=False)
    cells = grid.ravel()
    for axes, (title, (y_label, series)) in zip(cells, panels.items()):
        for label, values in series.items():
            axes.plot(range(len(values)), list(values), label=label, linewidth=1.4)
        axes.set(xlabel=x_label, ylabel=y_label, title=title)
        axes.grid(alpha=0.3)
        axes.legend()
    for axes in cells[len(panels):]:
        axes.set_visible(False)
    return save_figure(figure, path)


def save_figure(figure, path: str | Path) -> Path:
    """Lay out a matplotlib ``figure``, write it to ``path`` as PNG (under a partial name, renamed
    when complete) and close it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    with atomic_path(Path(path), keep_suffix=True) as partial:
        figure.savefig(partial, format="png")
    plt.close(figure)
    return Path(path)
