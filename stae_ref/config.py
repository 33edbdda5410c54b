"""STAEConfig: every architecture choice of the reference, validated, with JSON round-trip.

Derived sizes are computed with :func:`exact_div`, so a frame size the network cannot tile fails
when the config is built, naming the fields, not deep inside a convolution or TensorRT.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from stae_deploy.runtime.errors import ConfigError

HEADS = ("direct", "residual")
ENCODER_DECODERS = ("separate", "shared")


def exact_div(numerator: int, denominator: int, what: str) -> int:
    """``numerator // denominator``, raising :class:`ConfigError` (naming ``what``) on a remainder."""
    if numerator % denominator:
        raise ConfigError(f"{what}: {numerator} is not divisible by {denominator}")
    return numerator // denominator


@dataclass(frozen=True)
class STAEConfig:
    """Architecture of one STAE model. Defaults are the paper's (ICME 2021, §3).

    frame_size:     (height, width) of input and predicted frames, pixels.
    patch:          space-to-depth factor of the encoder stem (512 -> 64 grid for patch 8).
    stride2_stages: stride-(1,2,2) Conv3d stages after the stem (and pixel-shuffle stages back).
    hidden:         channels of every recurrent layer (the latent C).
    layers:         stacked recurrent layers N.
    tau:            previous states attended over by ATT_t and ATT_s.
    kernel:         (t, h, w) kernel of the recurrent convolutions.
    clip_len:       frames per step's input clip L (previous L-1 frames + the current one); it is
                    also the latent's time extent T.
    cell:           recurrent cell type (see ``stae_deploy.stae_ref.cells``).
    head:           "direct" predicts the frame with eq. (8); "residual" predicts
                    v_t + eq. (8) with the last conv zero-initialised (a documented deviation).
    decoder_skip:   feed the space-to-depth input clip to each decoder's last conv, so the
                    decoded frame can use full-resolution detail (a documented deviation; off
                    in the paper's configuration).
    encoder_decoder: "separate" (the paper's STAE): spatial, temporal and output encoders
                    SE/TE/OE (eq. 2) and decoders SD/TD/OD (eq. 7), fused by eq. (8).
                    "shared": the paper's ablation "STAE w/o ED" (Table 3), standard encoders
                    and decoders: one encoder whose latent is all three cell inputs, and one
                    decoder of the cell's output latent whose frames go straight to the time
                    collapse (eq. (8) has no streams left to fuse; see ``stae_deploy.stae_ref.model``).

    With the defaults the latent is 64x2x16x16 at 512x512 and 64x2x8x8 at 256x256: one set of
    weights runs at both sizes, since nothing in the network depends on the resolution.
    """

    frame_size: tuple[int, int] = (512, 512)
    patch: int = 8
    stride2_stages: int = 2
    hidden: int = 64
    layers: int = 4
    tau: int = 5
    kernel: tuple[int, int, int] = (3, 5, 5)
    clip_len: int = 2
    cell: str = "stam"
    head: str = "direct"
    decoder_skip: bool = False
    encoder_decoder: str = "separate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", _int_tuple(self.frame_size, "frame_size", 2))
        object.__setattr__(self, "kernel", _int_tuple(self.kernel, "kernel", 3))
        for name in ("patch", "hidden", "layers", "tau", "stride2_stages"):
            _require_int(getattr(self, name), name, minimum=1)
        _require_int(self.clip_len, "clip_len", minimum=2,
                     why="each step needs the previous frame and the current one")
        if any(k % 2 == 0 for k in self.kernel):
            raise ConfigError(f"kernel: every size must be odd for 'same' padding, got {self.kernel}")
        if not isinstance(self.cell, str) or not self.cell:
            raise ConfigError(f"cell: expected a cell type name, got {self.cell!r}")
        if not isinstance(self.decoder_skip, bool):
            raise ConfigError(f"decoder_skip: expected true or false, got {self.decoder_skip!r}")
        if self.head not in HEADS:
            raise ConfigError(f"head: expected one of {HEADS}, got {self.head!r}")
        if self.encoder_decoder not in ENCODER_DECODERS:
            raise ConfigError(f"encoder_decoder: expected one of {ENCODER_DECODERS}, "
                              f"got {self.encoder_decoder!r}")
        exact_div(self.hidden, 2 ** self.stride2_stages,
                  f"hidden (channels halve at each of the stride2_stages={self.stride2_stages} "
                  f"decoder stages)")
        self.latent_hw  # noqa: B018 - validates frame_size against the total stride

    @property
    def total_stride(self) -> int:
        """Pixels per latent cell along each axis: patch * 2**stride2_stages."""
        return self.patch * 2 ** self.stride2_stages

    @property
    def latent_hw(self) -> tuple[int, int]:
        """(h, w) of the latent grid the recurrent cells run on."""
        why = f"(total stride = patch {self.patch} x 2**stride2_stages {self.stride2_stages})"
        return (exact_div(self.frame_size[0], self.total_stride, f"frame_size height {why}"),
                exact_div(self.frame_size[1], self.total_stride, f"frame_size width {why}"))

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, T, h, w) of every latent feature and recurrent state."""
        return (self.hidden, self.clip_len, *self.latent_hw)

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Output channels of each stride-2 encoder stage, doubling up to ``hidden``."""
        return tuple(self.hidden // 2 ** (self.stride2_stages - 1 - i)
                     for i in range(self.stride2_stages))

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Output channels of each pixel-shuffle decoder stage, halving from ``hidden``."""
        return tuple(self.hidden // 2 ** (i + 1) for i in range(self.stride2_stages))

    def with_frame_size(self, frame_size: tuple[int, int] | int) -> "STAEConfig":
        """The same architecture at another frame size (an int means square)."""
        if isinstance(frame_size, int):
            frame_size = (frame_size, frame_size)
        return replace(self, frame_size=tuple(frame_size))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frame_size"], data["kernel"] = list(self.frame_size), list(self.kernel)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "STAEConfig":
        check_known_fields(cls, data, "config")
        return cls(**dict(data))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "STAEConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "STAEConfig":
        """Read a config JSON file."""
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
        return cls.from_json(text)


def check_known_fields(cls: type, data: Mapping[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming any key of ``data`` that is not a field of ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {what} fields {unknown}; known fields: {sorted(known)}")


def _require_int(value: Any, name: str, minimum: int, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f" ({why})" if why else ""
        raise ConfigError(f"{name}: expected an integer >= {minimum}{reason}, got {value!r}")


def _int_tuple(value: Any, name: str, length: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)) and len(value) == length and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected {length} positive integers, got {value!r}")
