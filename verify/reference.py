"""Rebuild the exact PyTorch reference an artifact was exported from, and prove it is that one.

The artifact's metadata records where its weights came from: a checkpoint (its sha256) or seeded
random weights (the seed), plus the weights' own sha256. The rebuilt reference must match.
"""
from __future__ import annotations

from pathlib import Path

import torch

from stae_deploy.export.onnx_graph import open_graph
from stae_deploy.verify.parity import OnnxReference
from stae_deploy.runtime.artifact import ArtifactMetadata
from stae_deploy.runtime.errors import ArtifactError
from stae_deploy.runtime.files import sha256_file
from stae_deploy.stae_ref.checkpoint import load_checkpoint, weights_sha256
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model import STAE


def reference_for(metadata: ArtifactMetadata, source: str,
                  checkpoint: str | Path | None = None) -> STAE:
    """The reference model of the artifact ``source`` at its frame size, in eval mode."""
    config = STAEConfig.from_dict(metadata.config)
    if checkpoint is not None:
        digest = sha256_file(checkpoint)
        if metadata.checkpoint_sha256 and digest != metadata.checkpoint_sha256:
            raise ArtifactError(
                f"{source} was exported from a checkpoint with sha256 "
                f"{metadata.checkpoint_sha256}, but {checkpoint} has sha256 {digest}")
        model, _ = load_checkpoint(checkpoint)
    elif "random_seed" in metadata.notes:
        torch.manual_seed(int(metadata.notes["random_seed"]))
        model = STAE(config)
    else:
        raise ArtifactError(
            f"{source} was exported from checkpoint sha256 {metadata.checkpoint_sha256}; pass "
            f"--checkpoint with that file to compare against the reference")
    model.config = config
    expected = metadata.notes.get("weights_sha256")
    if expected and weights_sha256(model) != expected:
        raise ArtifactError(f"{source}: the rebuilt reference's weights (sha256 "
                            f"{weights_sha256(model)}) are not the exported ones ({expected})")
    return model.eval()


def reference_or_source(source: str | Path, checkpoint: str | Path | None = None
                        ) -> STAE | OnnxReference:
    """What a precision variant of the fp32 artifact ``source`` is checked against: the PyTorch
    reference when it can be rebuilt (``checkpoint`` given, or seeded random weights), else the
    FP32 graph ``source`` itself, whose distance from the variant is what FP16 and INT8 change."""
    metadata = open_graph(source)[1]
    if checkpoint is not None or "random_seed" in metadata.notes:
        return reference_for(metadata, str(source), checkpoint)
    return OnnxReference(source)
