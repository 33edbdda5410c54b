"""Building blocks of the reference: normalised 3D convs, space-to-depth stem, pixel shuffle,
and the SE/TE/OE encoders and SD/TD/OD decoders (eqs. 2 and 7).

Tensors are (B, C, T, H, W). Normalisation is GroupNorm(1, C): statistics over (C, T, H, W) with
a per-channel scale and shift, so the weights do not depend on the frame size.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvNorm(nn.Module):
    """Conv3d with 'same' padding (for stride 1) followed by GroupNorm(1, out_channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride,
                              padding=tuple(k // 2 for k in kernel))
        self.norm = nn.GroupNorm(1, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


def space_to_depth(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, T, H, W) -> (B, C*patch**2, T, H/patch, W/patch); channel order (c, dy, dx)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // patch, patch, w // patch, patch)  # (B, C, T, h, py, w, px)
    x = x.permute(0, 1, 4, 6, 2, 3, 5)                            # (B, C, py, px, T, h, w)
    return x.reshape(b, c * patch * patch, t, h // patch, w // patch)


def depth_to_space(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: (B, C*f**2, T, H, W) -> (B, C, T, H*f, W*f)."""
    b, cff, t, h, w = x.shape
    c = cff // (factor * factor)
    x = x.reshape(b, c, factor, factor, t, h, w)                   # (B, C, fy, fx, T, H, W)
    x = x.permute(0, 1, 4, 5, 2, 6, 3)                            # (B, C, T, H, fy, W, fx)
    return x.reshape(b, c, t, h * factor, w * factor)


class Encoder(nn.Module):
    """One of SE/TE/OE: space-to-depth features -> latent (B, hidden, T, h, w).

    Input is the already space-to-depth'ed clip (B, 3*patch**2, T, H/patch, W/patch); each stage
    is a stride-(1,2,2) ConvNorm + LeakyReLU.
    """

    def __init__(self, in_channels: int, stage_channels: tuple[int, ...]):
        super().__init__()
        stages = []
        for out_channels in stage_channels:
            stages += [ConvNorm(in_channels, out_channels, (3, 3, 3), stride=(1, 2, 2)),
                       nn.LeakyReLU(0.2)]
            in_channels = out_channels
        self.stages = nn.Sequential(*stages)

    def forward(self, s2d_clip: torch.Tensor) -> torch.Tensor:
        return self.stages(s2d_clip)


class Decoder(nn.Module):
    """One of SD/TD/OD: latent (B, hidden, T, h, w) -> (B, 3, T, H, W) at full frame size.

    Upsampling is conv + depth-to-space (pixel shuffle), never ConvTranspose3d (docs/design_brief.md §1):
    each stage doubles h and w and halves the channels; a final (1,3,3) conv + depth-to-space by
    ``patch`` returns to pixels.
    """

    def __init__(self, hidden: int, stage_channels: tuple[int, ...], patch: int,
                 out_channels: int = 3, skip_channels: int = 0):
        super().__init__()
        stages: list[nn.Module] = []
        in_channels = hidden
        for out_ch in stage_channels:
            stages.append(_PixelShuffleStage(in_channels, out_ch))
            in_channels = out_ch
        self.stages = nn.Sequential(*stages)
        self.to_pixels = nn.Conv3d(in_channels + skip_channels, out_channels * patch * patch,
                                   (1, 3, 3), padding=(0, 1, 1))
        self.patch = patch

    def forward(self, latent: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """latent (B, hidden, T, h, w); skip: the space-to-depth clip (B, 3p², T, H/p, W/p)
        concatenated before the last conv when the decoder was built with skip channels."""
        features = self.stages(latent)                       # (B, C', T, H/p, W/p)
        if skip is not None:
            features = torch.cat([features, skip], dim=1)
        return depth_to_space(self.to_pixels(features), self.patch)


class _PixelShuffleStage(nn.Module):
    """Conv to 4x channels, depth-to-space by 2, GroupNorm(1, C), LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * 4, (3, 3, 3), padding=1)
        self.norm = nn.GroupNorm(1, out_channels)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(depth_to_space(self.conv(x), 2)))
