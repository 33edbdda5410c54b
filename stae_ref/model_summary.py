"""What a model is, how big it is, what one step costs and its state protocol: the facts
``stae info`` prints."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.model_cost import gflop_per_step, parameter_count
from stae_deploy.stae_ref.model_source import ModelSource, load_model


@dataclass(frozen=True)
class ModelSummary:
    """config: the model's STAEConfig (at the requested frame size). checkpoint_sha256: of the
    checkpoint the weights came from (None: seeded random weights). params: trainable scalars.
    gflop_per_step: convolution and matmul GFLOP of one batch-1 step. spec: the step's inputs,
    outputs and state pairs."""

    config: STAEConfig
    checkpoint_sha256: str | None
    params: int
    gflop_per_step: float
    spec: IOSpec

    @property
    def state_mb(self) -> float:
        """MiB of all state inputs of one batch-1 step."""
        return sum(pair.input.sample_nbytes for pair in self.spec.state) / 2 ** 20

    def inputs(self) -> list[dict[str, Any]]:
        """Every step input in protocol order: name, shape, dtype and, for a state input, the
        output that feeds it at the next step (None for data inputs such as the frame)."""
        return ([{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "output": None}
                 for t in self.spec.data_inputs]
                + [{"name": p.input.name, "shape": list(p.input.shape), "dtype": p.input.dtype,
                    "output": p.output.name} for p in self.spec.state])

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``stae info --json`` (GFLOP and MiB rounded to 3 decimals)."""
        return {
            "config": self.config.to_dict(),
            "checkpoint_sha256": self.checkpoint_sha256,
            "total_stride": self.config.total_stride,
            "latent_shape": list(self.config.latent_shape),
            "params": self.params,
            "gflop_per_step": round(self.gflop_per_step, 3),
            "state_mb": round(self.state_mb, 3),
            "state": self.inputs(),
            "outputs": [t.to_dict() for t in self.spec.outputs],
        }


def summarize_model(source: ModelSource) -> ModelSummary:
    """Load the model of ``source`` and measure it (one batch-1 step at its frame size)."""
    model, provenance = load_model(source)
    return ModelSummary(config=model.config,
                        checkpoint_sha256=provenance.get("checkpoint_sha256"),
                        params=parameter_count(model),
                        gflop_per_step=gflop_per_step(model, model.config.frame_size),
                        spec=model.spec())
