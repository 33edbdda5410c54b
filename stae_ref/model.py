"""The STAE reference model: encoders SE/TE/OE, a recurrent cell stack, decoders SD/TD/OD, eq. (8).

With ``config.encoder_decoder == "shared"`` it is the paper's ablation "STAE w/o ED" (Table 3):
standard encoders and decoders in place of the spatiotemporal ones, i.e. one encoder whose latent
z is all three cell inputs, ``Latents(z, z, z)``, and one decoder of the cell's top hidden state
H^N_t (``Latents.hidden``), what a standard encoder-decoder predictor (PredRNN's) decodes.
Eq. (8) then has nothing to fuse: its SH and TH come from decoders that no longer exist, and
feeding it one stream three times (``X ⊙ tanh(W [X, X])``) would add a self-gating nonlinearity
that no standard decoder has and the paper does not describe. So the one decoder's frames go
straight to the time collapse, ``v̂ = collapse_T(D(H))`` (``frame_fuse`` is not built): the
decoder's output is the frame, as in every standard encoder-decoder predictor. The time collapse
(T -> 1) is kept, as every configuration needs it, and with it the residual head. The one encoder
and decoder keep the module paths ``output_encoder`` / ``output_decoder`` (the paths of OE and OD),
which keep
checkpoints, exported initializer names and the INT8 node groups (``stae_deploy.calibration.node_groups``)
working unchanged.

Two ways in:
* :meth:`STAE.step` ``(frame, state) -> (prediction, next_state)``: pure, validated against the
  state protocol, state keyed by protocol input name;
* :meth:`STAE.forward` ``(frame, *state) -> (prediction, *next_state)``: the same step with
  positional tensors in protocol order, for ONNX export.
:meth:`STAE.rollout` warms up on real frames, then predicts closed-loop.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from stae_deploy.runtime.errors import FrameFormatError
from stae_deploy.runtime.protocol import IOSpec
from stae_deploy.stae_ref.cells import Latents, cell_class
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.layers import Decoder, Encoder, space_to_depth
from stae_deploy.stae_ref.state_spec import CLIP_WINDOW, FRAME, io_spec


class Rollout(NamedTuple):
    """Result of :meth:`STAE.rollout`.

    warmup_predictions: (B, K-1, 3, H, W), entry i predicts real frame i+1 (teacher-forced).
    forecast:           (B, horizon, 3, H, W), closed-loop frames K .. K+horizon-1.
    state:              the state after the last step, keyed by protocol input name.
    """

    warmup_predictions: torch.Tensor
    forecast: torch.Tensor
    state: dict[str, torch.Tensor]


class STAE(nn.Module):
    """SpatioTemporal Auto-Encoder. Frames are RGB float32 (B, 3, H, W) in [0, 1].

    The weights do not depend on the frame size: any size divisible by ``config.total_stride``
    runs; the protocol for another size is ``io_spec(config.with_frame_size(size))``.
    """

    def __init__(self, config: STAEConfig):
        super().__init__()
        self.config = config
        stem_channels = 3 * config.patch ** 2
        self.shared = config.encoder_decoder == "shared"
        skip_channels = stem_channels if config.decoder_skip else 0

        def encoder() -> Encoder:
            return Encoder(stem_channels, config.encoder_channels)

        def decoder() -> Decoder:
            return Decoder(config.hidden, config.decoder_channels, config.patch,
                           skip_channels=skip_channels)

        if not self.shared:
            self.spatial_encoder = encoder()                              # SE
            self.temporal_encoder = encoder()                             # TE
        self.output_encoder = encoder()               # OE; "shared": the one standard encoder
        self.cell = cell_class(config)(config)
        if not self.shared:
            self.spatial_decoder = decoder()                              # SD
            self.temporal_decoder = decoder()                             # TD
        self.output_decoder = decoder()               # OD; "shared": the one standard decoder
        if not self.shared:
            self.frame_fuse = nn.Conv3d(6, 3, 1)                          # W_1x1x1 of eq. (8)
        self.time_collapse = nn.Conv3d(3, 3, (config.clip_len, 1, 1))    # T -> 1
        if config.head == "residual":
            nn.init.zeros_(self.time_collapse.weight)    # untrained model == copy-last frame
            nn.init.zeros_(self.time_collapse.bias)

    def spec(self, frame_size: tuple[int, int] | None = None, batch: int = 1) -> IOSpec:
        """The state protocol at ``frame_size`` (default: the config's) and ``batch``."""
        config = self.config if frame_size is None else self.config.with_frame_size(frame_size)
        return io_spec(config, batch)

    def zero_state(self, batch: int = 1, frame_size: tuple[int, int] | None = None
                   ) -> dict[str, torch.Tensor]:
        """Zero state from the protocol, on this model's device, keyed by input name."""
        device = next(self.parameters()).device
        return {name: torch.from_numpy(array).to(device)
                for name, array in self.spec(frame_size, batch).zero_state().items()}

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Export signature: (frame, *state in protocol order) -> (prediction, *next_state)."""
        # Only names are read here: the batch is left symbolic for a dynamic-batch export.
        names = [pair.input.name for pair in self.spec(tuple(frame.shape[-2:])).state]
        prediction, next_state = self._step(frame, dict(zip(names, state, strict=True)))
        return (prediction, *(next_state[name] for name in names))

    def step(self, frame: torch.Tensor, state: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One time step. frame: (B, 3, H, W) float32; state keyed by protocol input name.

        Returns the prediction of the next frame (B, 3, H, W) and the next state (same keys).
        Raises :class:`FrameFormatError` naming the tensor when a shape or dtype is wrong.
        """
        spec = self._spec_for_frame(frame)
        spec.tensor(FRAME).check_array(frame)
        expected = {pair.input.name for pair in spec.state}
        if set(state) != expected:
            raise FrameFormatError(
                f"state: expected tensors {sorted(expected)}, got {sorted(state)}")
        for pair in spec.state:
            pair.input.check_array(state[pair.input.name])
        return self._step(frame, state)

    def rollout(self, frames: torch.Tensor, horizon: int,
                state: dict[str, torch.Tensor] | None = None) -> Rollout:
        """Warm up on real ``frames`` (B, K, 3, H, W), then predict ``horizon`` frames closed-loop.

        The state starts at zeros unless given. See :class:`Rollout` for what is returned.
        """
        batch, steps = frames.shape[:2]
        if state is None:
            state = self.zero_state(batch, tuple(frames.shape[-2:]))
        predictions = []
        for t in range(steps):
            prediction, state = self.step(frames[:, t], state)
            predictions.append(prediction)
        forecast = [predictions.pop()]
        for _ in range(horizon - 1):
            prediction, state = self.step(forecast[-1], state)
            forecast.append(prediction)
        empty = frames[:, :0]
        return Rollout(
            warmup_predictions=torch.stack(predictions, dim=1) if predictions else empty,
            forecast=torch.stack(forecast[:horizon], dim=1) if horizon > 0 else empty,
            state=state)

    def _step(self, frame: torch.Tensor, state: dict[str, torch.Tensor]
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        clip = torch.cat([state[CLIP_WINDOW], frame.unsqueeze(1)], dim=1)   # (B, L, 3, H, W)
        stem = space_to_depth(clip.transpose(1, 2), self.config.patch)      # (B, 3p², L, H/p, W/p)
        if self.shared:
            latent = self.output_encoder(stem)                             # (B, C, T, h, w)
            latents = Latents(spatial=latent, temporal=latent, output=latent)
        else:
            latents = Latents(spatial=self.spatial_encoder(stem),          # (B, C, T, h, w) each
                              temporal=self.temporal_encoder(stem),
                              output=self.output_encoder(stem))
        cell_state = {name: tensor for name, tensor in state.items() if name != CLIP_WINDOW}
        top, next_cell_state = self.cell(latents, cell_state)
        skip = stem if self.config.decoder_skip else None
        # OH (B, 3, T, H, W); the ablation's one decoder reads the top hidden state H^N_t
        output_pixels = self.output_decoder(top.hidden if self.shared else top.output, skip)
        if self.shared:
            fused = output_pixels                           # no eq. (8): see the module doc
        else:
            spatial_pixels = self.spatial_decoder(top.spatial, skip)       # SH (B, 3, T, H, W)
            temporal_pixels = self.temporal_decoder(top.temporal, skip)    # TH (B, 3, T, H, W)
            fused = output_pixels * torch.tanh(
                self.frame_fuse(torch.cat([spatial_pixels, temporal_pixels], dim=1)))  # eq. (8)
        prediction = self.time_collapse(fused).squeeze(2)                  # (B, 3, H, W)
        if self.config.head == "residual":
            prediction = frame + prediction
        return prediction, {CLIP_WINDOW: clip[:, 1:], **next_cell_state}

    def _spec_for_frame(self, frame: torch.Tensor) -> IOSpec:
        if frame.dim() != 4 or frame.shape[1] != 3:
            raise FrameFormatError(
                f"tensor '{FRAME}': got shape {tuple(frame.shape)}, expected (B, 3, H, W)")
        height, width = frame.shape[-2:]
        stride = self.config.total_stride
        if height % stride or width % stride:
            raise FrameFormatError(
                f"tensor '{FRAME}': frame size {height}x{width} is not a multiple of the total "
                f"stride {stride} (patch x 2**stride2_stages) of this model")
        return self.spec((int(height), int(width)), int(frame.shape[0]))
