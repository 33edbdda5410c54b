"""The state protocol: built from the config, JSON round-trip, zero state, explicit pairing."""
import numpy as np
import pytest

from stae_deploy.runtime.errors import FrameFormatError, ProtocolError
from stae_deploy.runtime.protocol import IOSpec, StatePair, TensorSpec
from stae_deploy.stae_ref.config import STAEConfig
from stae_deploy.stae_ref.state_spec import io_spec


def test_default_protocol_at_512():
    spec = io_spec(STAEConfig())
    shapes = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    assert shapes == {
        "frame": (1, 3, 512, 512), "prediction": (1, 3, 512, 512),
        "clip_window": (1, 1, 3, 512, 512), "next_clip_window": (1, 1, 3, 512, 512),
        "hidden": (1, 4, 64, 2, 16, 16), "next_hidden": (1, 4, 64, 2, 16, 16),
        "temporal_ring": (1, 4, 5, 64, 2, 16, 16), "next_temporal_ring": (1, 4, 5, 64, 2, 16, 16),
        "spatial_ring": (1, 5, 64, 2, 16, 16), "next_spatial_ring": (1, 5, 64, 2, 16, 16),
    }
    assert all(t.dtype == "float32" for t in (*spec.inputs, *spec.outputs))
    assert all(len(t.shape) <= 8 for t in spec.inputs)      # TensorRT's dimension limit


@pytest.mark.parametrize("batch", [1, 3, "batch"])
def test_json_round_trip(batch):
    spec = io_spec(STAEConfig(frame_size=(256, 384)), batch)
    restored = IOSpec.from_json(spec.to_json())
    assert restored == spec
    assert [(p.input.name, p.output.name) for p in restored.state] == \
        [(p.input.name, p.output.name) for p in spec.state]


def test_zero_state_matches_the_protocol_tensor_for_tensor():
    spec = io_spec(STAEConfig(), batch=2)
    state = spec.zero_state()
    assert list(state) == [p.input.name for p in spec.state]
    for pair in spec.state:
        array = state[pair.input.name]
        assert array.shape == pair.input.shape and array.dtype == np.float32
        assert not array.any()
        pair.input.check_array(array)


def test_dynamic_batch_needs_an_explicit_batch_for_zero_state():
    spec = io_spec(STAEConfig(), batch="batch")
    with pytest.raises(ProtocolError, match="dynamic batch"):
        spec.zero_state()
    assert spec.zero_state(batch=3)["hidden"].shape == (3, 4, 64, 2, 16, 16)


def test_check_array_names_the_tensor():
    spec = io_spec(STAEConfig())
    hidden = spec.tensor("hidden")
    with pytest.raises(FrameFormatError, match=r"'hidden': got shape \(1, 4, 64, 2, 8, 8\)"):
        hidden.check_array(np.zeros((1, 4, 64, 2, 8, 8), np.float32))
    with pytest.raises(FrameFormatError, match="'hidden': got dtype float64, expected float32"):
        hidden.check_array(np.zeros(hidden.shape))


@pytest.mark.parametrize("make, message", [
    (lambda: TensorSpec("x", (0, 3)), "axis 0"),
    (lambda: TensorSpec("x", (1, -3)), "'x': axis 1"),
    (lambda: TensorSpec("x", (1, 3), "float64"), "'x': dtype"),
    (lambda: StatePair(TensorSpec("h", (1, 2)), TensorSpec("h", (1, 2))), "distinct names"),
    (lambda: StatePair(TensorSpec("h", (1, 2)), TensorSpec("next_h", (1, 3))), "keep its shape"),
    (lambda: IOSpec((TensorSpec("x", (1, 2)),), (TensorSpec("x", (1, 2)),), ()), "repeated"),
    (lambda: IOSpec.from_json('{"version": 9, "data_inputs": [], "data_outputs": [], '
                              '"state": []}'), "version 9"),
    (lambda: IOSpec.from_json('{"version": 1}'), "missing keys"),
])
def test_malformed_protocols_are_refused(make, message):
    with pytest.raises(ProtocolError, match=message):
        make()
