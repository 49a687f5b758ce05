"""The torch model definitions: torchvision's v2/v3 layer for layer, seeded weights, weights files."""

import pytest
import torch
from torch import nn

from mnet_compile.errors import MnetError
from mnet_compile.models import MODELS, create_model


def test_architectures_are_torchvisions():
    """Parameter counts and module names of torchvision's mobilenet_v2 / v3_small / v3_large."""
    counts = {"mobilenet_v2": 3_504_872, "mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032}
    for name, count in counts.items():
        model = create_model(name)
        assert sum(p.numel() for p in model.parameters()) == count, name
    keys = set(create_model("mobilenet_v3_large").state_dict())
    assert {"features.0.0.weight", "features.4.block.2.fc1.weight", "features.16.1.running_var",
            "classifier.3.bias"} <= keys
    keys = set(create_model("mobilenet_v2").state_dict())
    assert {"features.1.conv.0.0.weight", "features.2.conv.3.running_mean", "classifier.1.weight"} <= keys
    assert len(create_model("mobilenet_v3_small").features) == 13


def test_seed_randomizes_batchnorm_and_biases():
    """BN statistics and affine parameters are random (so BN folding is exercised), and v3's SE conv biases."""
    bn = create_model(alpha=0.25, seed=7).features[0][1]
    assert bn.running_mean.abs().sum() > 0 and (bn.running_var - 1).abs().sum() > 0
    assert (bn.weight - 1).abs().sum() > 0 and bn.bias.abs().sum() > 0
    se = create_model("mobilenet_v3_small", seed=7).features[1].block[1].fc1
    assert se.bias.abs().sum() > 0
    a, b = create_model(alpha=0.25, seed=7), create_model(alpha=0.25, seed=8)
    assert not torch.equal(a.classifier.weight, b.classifier.weight)
    assert torch.equal(a.classifier.weight, create_model(alpha=0.25, seed=7).classifier.weight)


@pytest.mark.parametrize("name", MODELS)
def test_weights_file_round_trip(tmp_path, name):
    path = tmp_path / "w.pt"
    torch.save(create_model(name, 0.5, seed=3).state_dict(), path)
    loaded = create_model(name, 0.5, seed=99, weights=str(path))
    for (key, a), b in zip(loaded.state_dict().items(), create_model(name, 0.5, seed=3).state_dict().values()):
        assert torch.equal(a, b), key
    with pytest.raises(MnetError, match="does not fit .* alpha=1.0"):
        create_model(name, 1.0, weights=str(path))


def test_bad_arguments():
    for kwargs, message in [({"name": "mobilenet_v4"}, "unknown model"), ({"alpha": 0}, "alpha must be in"),
                            ({"classes": 0}, "classes must be a positive integer")]:
        with pytest.raises(MnetError, match=message):
            create_model(**kwargs)
    assert isinstance(create_model(alpha=0.25, classes=10).classifier, nn.Linear)
