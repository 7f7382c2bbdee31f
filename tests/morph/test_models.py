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
