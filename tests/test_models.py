"""Net1D: parameter counts of the presets, output shapes, the feature/head split, SAME padding."""

from __future__ import annotations

import pytest
import torch

from ecgka.errors import ConfigError
from ecgka.models import count_parameters, create_model, list_models, list_presets
from ecgka.models.net1d import ConvSame, MaxPoolSame

# Published counts (one output, one input channel): reference/official-implementations.md "Net1D".
EXPECTED = {"small": 195_361, "large": 30_655_025, "ecg": 118_697, "tiny": 2_109}


def test_registry_lists_net1d_and_presets():
    assert "net1d" in list_models()
    assert set(EXPECTED) == set(list_presets("net1d"))


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_parameter_counts(preset):
    model = create_model("net1d", preset=preset)
    assert count_parameters(model) == EXPECTED[preset]


@pytest.mark.parametrize("preset", ["small", "ecg", "tiny", "large"])
def test_output_and_feature_shapes(preset):
    torch.manual_seed(0)
    model = create_model("net1d", preset=preset, in_channels=2).eval()
    length = 5000 if preset != "large" else 512  # large: a short input keeps the CPU test fast
    x = torch.randn(3, 2, length)
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    assert feats.shape == (3, model.feature_dim)
    assert out.shape == (3,)
    assert isinstance(model.head, torch.nn.Linear) and model.head.in_features == model.feature_dim
    torch.testing.assert_close(out, model.head(feats).squeeze(-1))


def test_default_preset_is_ecg_and_multi_output():
    model = create_model("net1d", num_outputs=3)
    assert count_parameters(model) == EXPECTED["ecg"] + 2 * (model.feature_dim + 1)
    assert model(torch.randn(2, 1, 1000)).shape == (2, 3)


@pytest.mark.parametrize("length,kernel,stride", [(5000, 16, 2), (2500, 5, 4), (17, 16, 4), (3, 5, 2)])
def test_same_padding_output_length(length, kernel, stride):
    conv = ConvSame(1, 1, kernel, stride)
    assert conv(torch.zeros(1, 1, length)).shape[-1] == -(-length // stride)
    assert MaxPoolSame(stride)(torch.zeros(1, 1, length)).shape[-1] == -(-length // stride)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid: net1d"):
        create_model("net2d")
    with pytest.raises(ConfigError, match="did you mean 'small'"):
        create_model("net1d", preset="smal")


@pytest.mark.parametrize(("preset", "length", "field"), [("small", 3000, 173), ("ecg", 12000, 2566)])
def test_convolutional_receptive_field(preset, length, field):
    """The documented receptive fields (docs/training.md): input samples that reach one time step of the last
    stage once the squeeze-excitation gates are made constant (they only add global per-channel gains)."""
    torch.manual_seed(0)
    model = create_model("net1d", preset=preset).double().eval()
    with torch.no_grad():
        for block in model.blocks.modules():
            if hasattr(block, "se_fc1"):
                block.se_fc1.weight.zero_()
    x = torch.randn(1, 1, length, dtype=torch.double, requires_grad=True)
    out = model.blocks(model.stem(x))
    out[0, :, out.shape[-1] // 2].sum().backward()
    touched = (x.grad[0, 0] != 0).nonzero().squeeze(1)
    assert int(touched.max() - touched.min()) + 1 == field
