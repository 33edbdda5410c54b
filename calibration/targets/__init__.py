"""INT8 targets: one file per tool that writes a Q/DQ graph. A new target is a new file plus one
entry in :data:`TARGETS`."""
from __future__ import annotations

from stae_deploy.calibration.targets.base import QuantTarget
from stae_deploy.calibration.targets.modelopt_target import ModelOptTarget
from stae_deploy.calibration.targets.onnxruntime_target import OnnxRuntimeTarget
from stae_deploy.runtime.errors import ConfigError

TARGETS: dict[str, type[QuantTarget]] = {"tensorrt": ModelOptTarget,
                                          "onnxruntime": OnnxRuntimeTarget}
DEFAULT_TARGET = "tensorrt"

__all__ = ["DEFAULT_TARGET", "TARGETS", "QuantTarget", "target_named"]


def target_named(name: str) -> QuantTarget:
    """The target called ``name``; a ConfigError naming the known ones otherwise."""
    if name not in TARGETS:
        raise ConfigError(f"target: unknown INT8 target {name!r}; known: {sorted(TARGETS)}")
    return TARGETS[name]()
