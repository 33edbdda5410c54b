"""STAEConfig: the paper's defaults, derived sizes, JSON round-trip, and errors naming fields."""
import pytest

from stae_deploy.runtime.errors import ConfigError
from stae_deploy.stae_ref.config import STAEConfig


def test_defaults_are_the_papers():
    config = STAEConfig()
    assert (config.layers, config.hidden, config.kernel, config.tau) == (4, 64, (3, 5, 5), 5)
    assert config.latent_shape == (64, 2, 16, 16)                       # Table 2, at 512²
    assert config.with_frame_size(256).latent_shape == (64, 2, 8, 8)    # documented choice


def test_derived_sizes_follow_the_fields():
    config = STAEConfig(frame_size=(384, 640), patch=4, stride2_stages=3, hidden=32)
    assert config.total_stride == 32
    assert config.latent_hw == (12, 20)
    assert config.encoder_channels == (8, 16, 32)
    assert config.decoder_channels == (16, 8, 4)


@pytest.mark.parametrize("config", [STAEConfig(), STAEConfig(frame_size=(128, 256), tau=3,
                                                              head="residual", layers=2)])
def test_json_round_trip(config):
    assert STAEConfig.from_json(config.to_json()) == config
    assert STAEConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("overrides, names", [
    ({"frame_size": (500, 512)}, ["frame_size height", "500", "32"]),
    ({"frame_size": (512, 500)}, ["frame_size width", "500"]),
    ({"frame_size": (512,)}, ["frame_size"]),
    ({"hidden": 0}, ["hidden"]),
    ({"hidden": 62}, ["hidden", "stride2_stages"]),
    ({"layers": 1.5}, ["layers"]),
    ({"tau": 0}, ["tau"]),
    ({"clip_len": 1}, ["clip_len", "previous frame"]),
    ({"kernel": (3, 4, 5)}, ["kernel", "odd"]),
    ({"kernel": (3, 5)}, ["kernel"]),
    ({"head": "flow"}, ["head", "residual"]),
    ({"patch": True}, ["patch"]),
])
def test_bad_values_name_the_field(overrides, names):
    with pytest.raises(ConfigError) as error:
        STAEConfig(**overrides)
    for name in names:
        assert name in str(error.value)


def test_unknown_fields_and_bad_json_are_refused():
    with pytest.raises(ConfigError, match=r"unknown config fields \['hiden'\]"):
        STAEConfig.from_dict({"hiden": 32})
    with pytest.raises(ConfigError, match="not valid JSON"):
        STAEConfig.from_json("{hidden: 32")


def test_unknown_cell_names_the_field():
    from stae_deploy.stae_ref.model import STAE

    with pytest.raises(ConfigError, match=r"cell: unknown cell type 'lstm'.*stam"):
        STAE(STAEConfig(cell="lstm"))
