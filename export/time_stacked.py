"""The fast export graph: STAE with every Conv3d run as one Conv2d over time-stacked channels.

The latent's time extent T is small (``clip_len``, 2 by default) and every Conv3d of STAE has time
stride 1, so a Conv3d over ``(B, C, T, h, w)`` is exactly a Conv2d over ``(B, C*T, h, w)`` (channel
``c*T + t``) whose weight is a T_out x T block matrix of the 3D kernel's time slices::

    out[t_o] = sum_{t_i} W3d[:, :, t_i - t_o + pad_t] * in[t_i]     (slices outside the kernel: 0)

For T = 2, kernel depth 3 and time padding 1 that is the block weight ``[[w1, w2], [w0, w1]]``:
no FLOP is spent on the zero padding in time (a Conv3d spends a third of its taps there), and 2-D
convolutions get onnxruntime's blocked NCHWc kernels and TensorRT's best-tuned path.

Everything else carries over unchanged in meaning:

* ``GroupNorm(1, C)`` over ``(C, T, h, w)`` is ``GroupNorm(1, C*T)`` over ``(C*T, h, w)`` with
  each channel's scale and shift repeated T times: the same statistics.
* depth-to-space becomes one ``PixelShuffle`` (ONNX DepthToSpace, CRD), its conv's output
  channels reordered so the shuffle lands on the time-stacked layout.
* the recurrent cell is the reference's own code: cells only chunk, concatenate and stack along
  the channel axis and index the ring axis, which are the same in either layout. A cell whose
  state is not latent-shaped ``(..., C, T, h, w)`` cannot be stacked and is refused.
* the state protocol is untouched: state crosses the graph boundary in its protocol shape and
  is reshaped (a free view) to and from the stacked layout inside the graph.

Two more exact rearrangements (same FLOPs, fewer copies):

* the encoders' first conv over the space-to-depth stem is the same conv over the clip's pixels
  with kernel, stride and padding times the patch, so the stem's 7-D transpose is never run;
  with ``decoder_skip`` each decoder's last conv is split into its features part and such a
  pixel-space part;
* eq. (8) is per pixel, so it runs before the last depth-to-space as grouped 1x1 convs (one
  group per sub-pixel) and one depth-to-space of the 3-channel prediction ends the step, instead
  of three depth-to-spaces of 3*T channels and a full-resolution head.

With ``encoder_decoder == "shared"`` (the ablation "STAE w/o ED", see ``stae_deploy.stae_ref.model``) only
``output_encoder`` and ``output_decoder`` exist, the one latent is all three cell inputs, the
decoder reads the cell's top hidden state and its frames go straight to the (grouped) time collapse, as in the reference.

Module paths start like the reference's (``cell.layers.0.conv_h.conv``,
``spatial_decoder.to_pixels.features``, ``frame_fuse``), so exported initializer names, and with
them the INT8 node groups (``stae_deploy.calibration.node_groups``), carry over.
The weights are derived from the reference at construction; nothing is trained or approximated:
``stae check`` compares the exported graph against the unmodified reference. After export,
``stae_deploy.export.graph_rewrites`` makes the ONNX graph cheaper still (``stae_deploy.export.to_onnx.GRAPHS``).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.cells import cell_class
from stae_deploy.stae_ref.cells.base import Latents
from stae_deploy.stae_ref.layers import Decoder, _PixelShuffleStage
from stae_deploy.stae_ref.model import STAE
from stae_deploy.stae_ref.state_spec import CLIP_WINDOW, io_spec


def time_stacked_conv(conv: nn.Conv3d, time: int) -> nn.Conv2d:
    """The Conv2d over ``(B, C_in*time, h, w)`` equal to ``conv`` over ``(B, C_in, time, h, w)``.

    Its output is ``(B, C_out*T_out, h', w')``, channel ``c*T_out + t``, with
    ``T_out = time + 2*pad_t - k_t + 1``. Refuses time strides, dilations and groups != 1.
    """
    if conv.stride[0] != 1 or conv.dilation != (1, 1, 1) or conv.groups != 1 \
            or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ConfigError(f"{conv}: only Conv3d with time stride 1, no dilation, one group and "
                          f"zero padding can be stacked over time")
    k_t, k_h, k_w = conv.kernel_size
    pad_t = conv.padding[0]
    time_out = time + 2 * pad_t - k_t + 1
    if time_out < 1:
        raise ConfigError(f"{conv}: kernel depth {k_t} does not fit a time extent of {time}")
    weight3d = conv.weight.detach()                                   # (C_out, C_in, k_t, kh, kw)
    c_out, c_in = weight3d.shape[:2]
    blocks = weight3d.new_zeros(c_out, time_out, c_in, time, k_h, k_w)
    for t_out in range(time_out):
        for t_in in range(time):
            k = t_in - t_out + pad_t
            if 0 <= k < k_t:
                blocks[:, t_out, :, t_in] = weight3d[:, :, k]
    stacked = nn.Conv2d(c_in * time, c_out * time_out, (k_h, k_w), stride=conv.stride[1:],
                        padding=conv.padding[1:], bias=conv.bias is not None,
                        **_like(conv.weight))
    with torch.no_grad():
        stacked.weight.copy_(blocks.reshape(c_out * time_out, c_in * time, k_h, k_w))
        if conv.bias is not None:
            stacked.bias.copy_(conv.bias.detach().repeat_interleave(time_out))
    return stacked


def _like(tensor: torch.Tensor) -> dict:
    """Factory arguments that make a new module's parameters match ``tensor``'s dtype/device."""
    return {"dtype": tensor.dtype, "device": tensor.device}


def time_stacked_norm(norm: nn.GroupNorm, time: int) -> nn.GroupNorm:
    """``GroupNorm(1, C)`` over ``(C, T, h, w)`` as ``GroupNorm(1, C*T)`` over ``(C*T, h, w)``."""
    if norm.num_groups != 1:
        raise ConfigError(f"{norm}: only GroupNorm(1, C) has the same statistics time-stacked")
    stacked = nn.GroupNorm(1, norm.num_channels * time, eps=norm.eps, affine=norm.affine,
                           **(_like(norm.weight) if norm.affine else {}))
    if norm.affine:
        with torch.no_grad():
            stacked.weight.copy_(norm.weight.detach().repeat_interleave(time))
            stacked.bias.copy_(norm.bias.detach().repeat_interleave(time))
    return stacked


def stack_modules(module: nn.Module, time: int) -> nn.Module:
    """A copy of ``module`` with every Conv3d and GroupNorm replaced by its time-stacked form.

    Every Conv3d must keep the time extent (the encoders' and the cell's do)."""
    stacked = copy.deepcopy(module)
    for name, child in list(stacked.named_modules()):
        if isinstance(child, nn.Conv3d):
            replacement: nn.Module = time_stacked_conv(child, time)
            if replacement.out_channels != child.out_channels * time:
                raise ConfigError(f"{name}: changes the time extent; it cannot be stacked alone")
        elif isinstance(child, nn.GroupNorm):
            replacement = time_stacked_norm(child, time)
        else:
            continue
        parent_name, _, attribute = name.rpartition(".")
        setattr(stacked.get_submodule(parent_name), attribute, replacement)
    return stacked


def reorder_output_channels(conv: nn.Conv2d, order: torch.Tensor) -> nn.Conv2d:
    """``conv`` with output channel ``i`` taken from old channel ``order[i]`` (in place)."""
    with torch.no_grad():
        conv.weight.copy_(conv.weight[order])
        if conv.bias is not None:
            conv.bias.copy_(conv.bias[order])
    return conv


def shuffle_ready_conv(conv: nn.Conv3d, time: int, factor: int) -> nn.Conv2d:
    """The time-stacked ``conv`` with its output channels ordered for ``PixelShuffle(factor)``.

    The reference's depth-to-space reads conv channel ``c*f² + s`` (s: sub-pixel) at time t,
    stacked as ``(c*f² + s)*T + t``; PixelShuffle wants ``(c*T + t)*f² + s``."""
    stacked = time_stacked_conv(conv, time)
    order = torch.arange(stacked.out_channels).reshape(-1, factor ** 2, time)   # [c, s, t] -> old
    return reorder_output_channels(stacked, order.permute(0, 2, 1).reshape(-1))


def subpixel_major_conv(conv: nn.Conv3d, time: int, factor: int) -> nn.Conv2d:
    """The time-stacked ``conv`` with output channels ordered sub-pixel first, ``s*C*T + c*T + t``,
    so per-pixel ops after the reference's depth-to-space become grouped ops before it."""
    stacked = time_stacked_conv(conv, time)
    order = torch.arange(stacked.out_channels).reshape(-1, factor ** 2, time)   # [c, s, t] -> old
    return reorder_output_channels(stacked, order.permute(1, 0, 2).reshape(-1))


def pixel_space_conv(stem_conv: nn.Conv2d, patch: int, length: int) -> nn.Conv2d:
    """A Conv2d over the time-stacked space-to-depth stem ``(B, 3p²*L, H/p, W/p)`` as the same
    conv over the clip's pixels ``(B, L*3, H, W)`` (channel ``t*3 + c``): kernel, stride and
    padding times ``patch``. Same FLOPs, and the stem's 7-D transpose is never computed."""
    c_out, c_in, k_h, k_w = stem_conv.weight.shape
    colours = c_in // (patch * patch * length)
    weight = stem_conv.weight.detach().reshape(c_out, colours, patch, patch, length, k_h, k_w)
    # [o, c, py, px, t, ky, kx] -> [o, t, c, ky, py, kx, px]: pixel (ky*p + py, kx*p + px)
    weight = weight.permute(0, 4, 1, 5, 2, 6, 3).reshape(
        c_out, length * colours, k_h * patch, k_w * patch)
    pixels = nn.Conv2d(length * colours, c_out, (k_h * patch, k_w * patch),
                       stride=tuple(s * patch for s in stem_conv.stride),
                       padding=tuple(q * patch for q in stem_conv.padding),
                       bias=stem_conv.bias is not None, **_like(stem_conv.weight))
    with torch.no_grad():
        pixels.weight.copy_(weight)
        if stem_conv.bias is not None:
            pixels.bias.copy_(stem_conv.bias.detach())
    return pixels


def input_channel_slice(conv: nn.Conv2d, start: int, stop: int, bias: bool = True) -> nn.Conv2d:
    """The part of ``conv`` that reads input channels ``start:stop`` (a conv over a
    concatenation is the sum of such parts); ``bias``: keep the bias in this part."""
    part = nn.Conv2d(stop - start, conv.out_channels, conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, bias=bias and conv.bias is not None,
                     **_like(conv.weight))
    with torch.no_grad():
        part.weight.copy_(conv.weight[:, start:stop])
        if part.bias is not None:
            part.bias.copy_(conv.bias)
    return part


def grouped_pointwise_conv(conv: nn.Conv2d, groups: int) -> nn.Conv2d:
    """A 1x1 ``conv`` applied to each of ``groups`` channel groups alike, as one grouped conv:
    input ``(B, groups*C_in, h, w)`` -> ``(B, groups*C_out, h, w)``."""
    grouped = nn.Conv2d(conv.in_channels * groups, conv.out_channels * groups, 1, groups=groups,
                        bias=conv.bias is not None, **_like(conv.weight))
    with torch.no_grad():
        grouped.weight.copy_(conv.weight.detach().repeat(groups, 1, 1, 1))
        if conv.bias is not None:
            grouped.bias.copy_(conv.bias.detach().repeat(groups))
    return grouped


class _StackedShuffleStage(nn.Module):
    """``_PixelShuffleStage`` time-stacked: conv, PixelShuffle(2), GroupNorm, LeakyReLU."""

    def __init__(self, stage: _PixelShuffleStage, time: int):
        super().__init__()
        self.conv = shuffle_ready_conv(stage.conv, time, 2)
        self.shuffle = nn.PixelShuffle(2)
        self.norm = time_stacked_norm(stage.norm, time)
        self.act = copy.deepcopy(stage.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.shuffle(self.conv(x))))


class _StackedDecoder(nn.Module):
    """A reference ``Decoder`` time-stacked, stopping before its last depth-to-space:
    latent (B, C*T, h, w) -> (B, p²*3*T, H/p, W/p), channel ``s*3T + c*T + t`` (sub-pixel s).

    With a skip, the reference's ``to_pixels(cat(features, stem))`` is split into
    ``to_pixels.features`` and ``to_pixels.skip``, the latter run on the clip's pixels
    (:func:`pixel_space_conv`), so the stem is never built."""

    def __init__(self, decoder: Decoder, time: int, skip_channels: int):
        super().__init__()
        self.stages = nn.Sequential(*(_StackedShuffleStage(s, time) for s in decoder.stages))
        whole = subpixel_major_conv(decoder.to_pixels, time, decoder.patch)
        features = whole.in_channels - skip_channels * time
        parts = {"features": input_channel_slice(whole, 0, features)}
        if skip_channels:
            skip = input_channel_slice(whole, features, whole.in_channels, bias=False)
            parts["skip"] = pixel_space_conv(skip, decoder.patch, time)
        self.to_pixels = nn.ModuleDict(parts)

    def forward(self, latent: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """latent (B, C*T, h, w); pixels: the clip (B, L*3, H, W), read only with a skip."""
        out = self.to_pixels["features"](self.stages(latent))
        return out + self.to_pixels["skip"](pixels) if "skip" in self.to_pixels else out


class TimeStackedSTAE(nn.Module):
    """The reference ``model`` in the time-stacked layout, with its export signature.

    ``forward(frame, *state) -> (prediction, *next_state)``, state in protocol order and shapes,
    exactly as :meth:`STAE.forward`; the weights are derived from ``model``'s at construction.
    """

    def __init__(self, model: STAE):
        super().__init__()
        config = self.config = model.config
        time = config.clip_len
        latent = config.latent_shape
        for name, shape in cell_class(config).state_shapes(config).items():
            if tuple(shape[-len(latent):]) != latent:
                raise ConfigError(f"cell {config.cell!r}: state '{name}' {shape} does not end in "
                                  f"the latent shape {latent}; export it with the plain graph")
        self.time = time
        self.shared = config.encoder_decoder == "shared"
        skip_channels = 3 * config.patch ** 2 if config.decoder_skip else 0
        # Same module paths as the reference: the "shared" model has only output_* and no
        # frame_fuse.
        names = ("output",) if self.shared else ("spatial", "temporal", "output")
        for name in names:
            setattr(self, f"{name}_encoder",
                    self._stacked_encoder(getattr(model, f"{name}_encoder")))
        self.cell = stack_modules(model.cell, time)
        for name in names:
            setattr(self, f"{name}_decoder",
                    _StackedDecoder(getattr(model, f"{name}_decoder"), time, skip_channels))
        # Eq. (8) is per pixel, so it runs before the last depth-to-space, on each sub-pixel
        # group alike (grouped 1x1 convs), and one depth-to-space of 3 channels ends the step.
        subpixels = config.patch ** 2
        if not self.shared:
            self.frame_fuse = grouped_pointwise_conv(
                time_stacked_conv(model.frame_fuse, time), subpixels)
        self.time_collapse = grouped_pointwise_conv(time_stacked_conv(model.time_collapse, time),
                                                    subpixels)

    def forward(self, frame: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Export signature: (frame, *state in protocol order) -> (prediction, *next_state)."""
        config = self.config.with_frame_size(tuple(frame.shape[-2:]))
        names = [pair.input.name for pair in io_spec(config).state]
        inputs = dict(zip(names, state, strict=True))
        clip = torch.cat([inputs[CLIP_WINDOW], frame.unsqueeze(1)], dim=1)   # (B, L, 3, H, W)
        pixels = clip.flatten(1, 2)                                      # (B, L*3, H, W)
        if self.shared:
            latent = self.output_encoder(pixels)                         # (B, C*T, h, w)
            latents = Latents(spatial=latent, temporal=latent, output=latent)
        else:
            latents = Latents(spatial=self.spatial_encoder(pixels),      # (B, C*T, h, w) each
                              temporal=self.temporal_encoder(pixels),
                              output=self.output_encoder(pixels))
        cell_state = {name: tensor.flatten(-4, -3)                        # (..., C*T, h, w)
                      for name, tensor in inputs.items() if name != CLIP_WINDOW}
        top, next_cell_state = self.cell(latents, cell_state)
        output_pixels = self.output_decoder(                             # (B, p²*3T, H/p, W/p)
            top.hidden if self.shared else top.output, pixels)
        if self.shared:
            fused = output_pixels                       # no eq. (8), as in the reference
        else:
            spatial_pixels = self.spatial_decoder(top.spatial, pixels)
            temporal_pixels = self.temporal_decoder(top.temporal, pixels)
            subpixels = config.patch ** 2
            both = torch.cat([spatial_pixels.unflatten(1, (subpixels, -1)),
                              temporal_pixels.unflatten(1, (subpixels, -1))], dim=2).flatten(1, 2)
            fused = output_pixels * torch.tanh(self.frame_fuse(both))    # eq. (8), per sub-pixel
        prediction = self._depth_to_space(self.time_collapse(fused))     # (B, 3, H, W)
        if config.head == "residual":
            prediction = frame + prediction
        channels, time = config.hidden, self.time
        next_state = {CLIP_WINDOW: clip[:, 1:],
                      **{name: tensor.unflatten(-3, (channels, time))
                         for name, tensor in next_cell_state.items()}}
        return (prediction, *(next_state[name] for name in names))

    def _stacked_encoder(self, encoder: nn.Module) -> nn.Module:
        """A reference encoder time-stacked, its first conv run on the clip's pixels
        (B, L*3, H, W) instead of the space-to-depth stem."""
        stacked = stack_modules(encoder, self.time)
        first = stacked.stages[0]
        first.conv = pixel_space_conv(first.conv, self.config.patch, self.time)
        return stacked

    def _depth_to_space(self, x: torch.Tensor) -> torch.Tensor:
        """(B, p²*3, h, w), channel ``s*3 + c`` -> (B, 3, h*p, w*p) (ONNX DepthToSpace, DCR)."""
        b, _, h, w = x.shape
        p = self.config.patch
        x = x.reshape(b, p, p, 3, h, w).permute(0, 3, 4, 1, 5, 2)       # (B, 3, h, py, w, px)
        return x.reshape(b, 3, h * p, w * p)
