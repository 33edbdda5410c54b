"""Pluggable recurrent cells. A new cell is a new file plus one entry in :data:`CELLS`.

A cell declares its own state (:meth:`RecurrentCell.state_shapes`) and maps the encoders'
(spatial, temporal, output) latents plus that state to the decoders' latents and the next state.
"""
from __future__ import annotations

from runtime.errors import ConfigError
from stae_ref.cells.base import Latents, RecurrentCell
from stae_ref.cells.stam import STAMStack
from stae_ref.cells.stam_bounded import BoundedSTAMStack
from stae_ref.config import STAEConfig

CELLS: dict[str, type[RecurrentCell]] = {"stam": STAMStack, "stam_bounded": BoundedSTAMStack}

__all__ = ["CELLS", "Latents", "RecurrentCell", "cell_class"]


def cell_class(config: STAEConfig) -> type[RecurrentCell]:
    """The cell class named by ``config.cell``; a :class:`ConfigError` if there is none."""
    if config.cell not in CELLS:
        raise ConfigError(f"cell: unknown cell type {config.cell!r}; known: {sorted(CELLS)}")
    return CELLS[config.cell]
