"""What an INT8 graph quantises: one frozen, JSON round-trip policy, shared by both targets.

``op_types``        op types given Q/DQ (activations per tensor, weights per output channel,
                    all symmetric); every other op stays FP32.
``exclude_groups``  node groups (``stae_deploy.calibration.node_groups``) kept FP32 even if their op type is
                    quantised.
``exclude_nodes``   node names kept FP32 as well (exact names).
``quantize_unbounded_state_convs``
                    False (the default): the convolutions fed by a state the cell declares
                    unbounded (``stae_deploy.calibration.unbounded_state``) stay FP32 too.

The default was chosen by measurement (``stae sensitivity`` on the demo checkpoint, ModelOpt
target, 100 held-out steps per clip, worst clip; table in ``calibration/README.md``): with only
one group in INT8, the decoders' last convolutions (``to_pixels``, which write the frame residual
at full resolution from a concatenation of decoded features and input pixels under one scale)
alone cost 52.3 dB vs FP32 and 26 % of the predicted change; the encoders 63.6 dB / 7 %; every
recurrent-cell group and the other decoder stages >= 81.8 dB / <= 2 %. So: every convolution in
INT8 but ``to_pixels`` and the eq. (8) head; the state path (gate products, memory updates, ATT
softmax), the normalisations and the residual add are not convolutions and stay FP32.
STAE's memories are bounded; the comparison cells' LSTM memories are not, and quantising the
convolutions that read them cost PredRNN and PredRNN++ their parity (README's model table), so
those stay FP32 by default.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.config import check_known_fields

ALL_OP_TYPES = "all"


@dataclass(frozen=True)
class QuantPolicy:
    """See the module docstring. ``op_types == ("all",)`` lets the tool quantise every op it can."""

    op_types: tuple[str, ...] = ("Conv",)
    exclude_groups: tuple[str, ...] = ("head", "to_pixels")
    exclude_nodes: tuple[str, ...] = ()
    quantize_unbounded_state_convs: bool = False

    def __post_init__(self) -> None:
        for name in ("op_types", "exclude_groups", "exclude_nodes"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{name}: expected a list of non-empty names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if not isinstance(self.quantize_unbounded_state_convs, bool):
            raise ConfigError(f"quantize_unbounded_state_convs: expected true or false, got "
                              f"{self.quantize_unbounded_state_convs!r}")
        if not self.op_types:
            raise ConfigError("op_types: empty; nothing would be quantised")
        if ALL_OP_TYPES in self.op_types and len(self.op_types) > 1:
            raise ConfigError(f"op_types: '{ALL_OP_TYPES}' cannot be combined with op types, "
                              f"got {list(self.op_types)}")

    @property
    def quantizes_all_op_types(self) -> bool:
        return self.op_types == (ALL_OP_TYPES,)

    def excluded_nodes(self, groups: Mapping[str, list[str]],
                       unbounded_state_convs: Sequence[str] = ()) -> list[str]:
        """Names of the nodes kept in float: the excluded groups' nodes, ``exclude_nodes`` and,
        unless ``quantize_unbounded_state_convs``, ``unbounded_state_convs`` (the graph's convs
        fed by an unbounded state). Raises ConfigError for a group the graph does not have."""
        unknown = sorted(set(self.exclude_groups) - set(groups))
        if unknown:
            raise ConfigError(f"exclude_groups: {unknown} are not groups of this graph; it has "
                              f"{sorted(groups)}")
        known_nodes = {n for names in groups.values() for n in names}
        missing = sorted(set(self.exclude_nodes) - known_nodes)
        if missing:
            raise ConfigError(f"exclude_nodes: {missing} are not nodes of this graph")
        excluded = [n for g in self.exclude_groups for n in groups[g]]
        also = [*self.exclude_nodes,
                *(() if self.quantize_unbounded_state_convs else unbounded_state_convs)]
        return excluded + [n for n in dict.fromkeys(also) if n not in excluded]

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "QuantPolicy":
        check_known_fields(cls, data, "quantisation policy")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


DEFAULT_POLICY = QuantPolicy()
