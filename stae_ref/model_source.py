"""Where a reference model's weights come from: a checkpoint, or a config with seeded random
weights, at an optional frame size. The one way every command builds the PyTorch reference."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from stae_deploy.runtime.errors import ConfigError


@dataclass(frozen=True)
class ModelSource:
    """checkpoint: a stae checkpoint (carries its config and weights), or None.
    config:     a STAEConfig JSON file for seeded random weights (None: the default config);
                not allowed together with ``checkpoint``.
    frame_size: (height, width) pixels overriding the config's frame size, or None.
    seed:       seed of the random weights when no checkpoint is given.
    """

    checkpoint: str | None = None
    config: str | None = None
    frame_size: tuple[int, int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.checkpoint is not None and self.config is not None:
            raise ConfigError("checkpoint, config: give one source of weights, not both "
                              f"(got checkpoint={self.checkpoint!r}, config={self.config!r})")
        if self.frame_size is not None:
            if (len(self.frame_size) != 2
                    or not all(isinstance(d, int) and d > 0 for d in self.frame_size)):
                raise ConfigError(f"frame_size: expected (height, width) positive ints, "
                                  f"got {self.frame_size!r}")
            object.__setattr__(self, "frame_size", tuple(self.frame_size))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSource":
        data = json.loads(text)
        if data.get("frame_size") is not None:
            data["frame_size"] = tuple(data["frame_size"])
        return cls(**data)


def load_model(source: ModelSource) -> tuple[Any, dict[str, Any]]:
    """(STAE model in eval mode, provenance) from ``source``.

    ``provenance`` says where the weights came from: ``{"checkpoint": path,
    "checkpoint_sha256": ...}`` or ``{"random_seed": seed}``, plus ``"weights_sha256"``. The
    model's config carries ``source.frame_size`` if given.
    """
    import torch

    from stae_deploy.runtime.files import sha256_file
    from stae_deploy.stae_ref.checkpoint import load_checkpoint, weights_sha256
    from stae_deploy.stae_ref.config import STAEConfig
    from stae_deploy.stae_ref.model import STAE

    provenance: dict[str, Any]
    if source.checkpoint:
        model, _ = load_checkpoint(source.checkpoint)
        provenance = {"checkpoint": str(source.checkpoint),
                      "checkpoint_sha256": sha256_file(source.checkpoint)}
    else:
        config = STAEConfig.load(source.config) if source.config else STAEConfig()
        torch.manual_seed(source.seed)
        model, provenance = STAE(config).eval(), {"random_seed": source.seed}
    if source.frame_size is not None:
        try:
            model.config = model.config.with_frame_size(source.frame_size)
        except ConfigError as err:
            height, width = source.frame_size
            raise ConfigError(f"frame_size {height}x{width}: {err}") from None
    provenance["weights_sha256"] = weights_sha256(model)
    return model, provenance

