"""Checkpoints carry their config: ``{"format", "version", "config", "state_dict", "metadata"}``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from stae_deploy.runtime.errors import CheckpointError, StaeError
from stae_deploy.runtime.files import refuse_overwrite, sha256_file
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model import STAE

CHECKPOINT_FORMAT = "stae-deploy-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(model: STAE, path: str | Path, metadata: dict[str, Any] | None = None,
                    force: bool = False) -> str:
    """Write ``model`` (weights + config + ``metadata``) to ``path``; returns the file's sha256."""
    path = refuse_overwrite(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
    }
    temporary = path.with_name(path.name + ".partial")
    torch.save(payload, temporary)
    temporary.replace(path)
    return sha256_file(path)


def load_checkpoint(path: str | Path) -> tuple[STAE, dict[str, Any]]:
    """Rebuild the model saved at ``path`` (on CPU, eval mode); returns (model, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a stae-deploy checkpoint "
            f"(truncated or not a torch file?): {type(err).__name__}: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a stae-deploy checkpoint "
                              f"(expected format '{CHECKPOINT_FORMAT}')")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format version {payload.get('version')} is "
                              f"not supported (expected {CHECKPOINT_VERSION})")
    try:
        config = STAEConfig.from_dict(payload["config"])
    except StaeError as err:
        raise CheckpointError(f"checkpoint {path}: invalid config: {err}") from None
    model = STAE(config)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {path}: weights do not match the config's model; "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval(), dict(payload.get("metadata", {}))


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of the model's weights (names, shapes, float32 bytes, in state-dict order).

    Identifies weights independently of the file they came from, so an artifact can be matched to
    the reference that made it (also for seeded random weights, which have no checkpoint).
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()
