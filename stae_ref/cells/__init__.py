"""Pluggable recurrent cells. A new cell is a new file plus one entry in :data:`CELLS`.

A cell declares its own state (:meth:`RecurrentCell.state_shapes`) and maps the encoders'
(spatial, temporal, output) latents plus that state to the decoders' latents and the next state.
:data:`CELLS` names each cell's module and class; a cell's module is imported when first used.
"""
from __future__ import annotations

import importlib

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.cells.base import Latents, RecurrentCell
from stae_deploy.stae_ref.config import STAEConfig

# cell type (``STAEConfig.cell``) -> "module:Class"
CELLS: dict[str, str] = {
    "stam": "stae_deploy.stae_ref.cells.stam:STAMStack",
    "stam_bounded": "stae_deploy.stae_ref.cells.stam_bounded:BoundedSTAMStack",
    "convlstm": "stae_deploy.stae_ref.cells.convlstm:ConvLSTMStack",
    "st_lstm": "stae_deploy.stae_ref.cells.st_lstm:STLSTMStack",
    "causal_lstm": "stae_deploy.stae_ref.cells.causal_lstm:CausalLSTMStack",
    "e3d_lstm": "stae_deploy.stae_ref.cells.e3d_lstm:E3DLSTMStack",
}

__all__ = ["CELLS", "Latents", "RecurrentCell", "cell_class"]


def cell_class(config: STAEConfig) -> type[RecurrentCell]:
    """The cell class named by ``config.cell``; a :class:`ConfigError` if there is none."""
    if config.cell not in CELLS:
        raise ConfigError(f"cell: unknown cell type {config.cell!r}; known: {sorted(CELLS)}")
    module, name = CELLS[config.cell].split(":")
    return getattr(importlib.import_module(module), name)
