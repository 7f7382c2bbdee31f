"""Learned red-cell centre maps: the seeds of the localizer's watershed.

A :class:`CentreDetector` wraps a small fully convolutional network (``locnet`` in the
model registry) that reads a field's optical density at the localizer's working scale
(see :func:`morph.segment.working_view`) and returns, per working pixel, the probability
that a red-cell centre lies there. :func:`morph.segment.segment_field` takes it as
``centres=``: its peaks replace the hand-made seeds (circle votes and distance-transform
maxima) for red cells; the foreground, the watershed, nuclei, platelets and every size
rule stay as they are. One peak per cell is what splits touching cells without cutting
pale or irregular ones in two.

A detector is a model folder (``models/locnet-v6``): ``config.json`` (architecture, cell
kinds, minimum peak spacing, provenance), ``thresholds.json`` (the peak threshold of each kind,
tuned with the localizer), ``weights.pt``, ``metrics.json`` and, optionally, the rule that joins a
red cell the map cut in two (:mod:`morph.segment.pairs`, learnt with
``python -m training.train_pair_rule``): a small network, ``pair_net.json`` + ``pair_net.pt``
(:class:`PairNetJudge`), or a logistic rule, ``pair_rule.json``; it is
retrained with ``python -m training.train_localizer`` on any YOLO-box data set (red-cell
boxes) plus rendered fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from .errors import MorphError
from .io import write_json, write_torch
from .model_folder import ModelFolder
from .models import cpu_state, create_model, fuse_for_inference
from .segment.pairs import CROP_CHANNELS, PAIR_FEATURES, PairJudge, PairPictures, PairRule

#: Name of the shipped localizer folder under ``models/``.
DEFAULT_LOCALIZER_NAME = "locnet-v6"


@dataclass
class CentreDetector:
    """A centre-map network plus the peak rules tuned with it.

    Attributes:
        net: maps ``(N, 3, h, w)`` optical density to ``(N, len(kinds), ceil(h/2), ceil(w/2))``
            logits.
        kinds: the cell kind of each output map (``"rbc"``, ``"nucleated"``, ``"platelet"``).
        thresholds: a peak of a kind's map is a seed when its probability reaches this.
        min_distance: minimum spacing of two red-cell seeds, in units of the typical radius.
        pair_rule: joins two touching red-cell regions that are one cell (None: never).
    """

    net: nn.Module
    arch: str = "locnet"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    kinds: tuple[str, ...] = ("rbc",)
    thresholds: dict[str, float] = field(default_factory=dict)
    min_distance: float = 0.4
    pair_rule: PairJudge | None = None
    name: str = "locnet-untrained"
    version: str = "0.0.0"
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    def __post_init__(self) -> None:
        self.net = self.net.eval()
        self.kinds = tuple(self.kinds)
        self.thresholds = {k: float(self.thresholds.get(k, 0.35)) for k in self.kinds}

    @property
    def threshold(self) -> float:
        """The red-cell threshold."""
        return self.thresholds.get("rbc", 0.35)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.thresholds["rbc"] = float(value)

    def centre_maps(self, od: np.ndarray) -> dict[str, np.ndarray]:
        """Probability of a cell centre per working pixel, ``(h, w)`` float32 per kind."""
        h, w = od.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(od.transpose(2, 0, 1), dtype=np.float32))[None]
        with torch.inference_mode():
            logits = self.net(x)
            prob = torch.sigmoid(nn.functional.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False))
        arr = prob[0].numpy()
        return {k: arr[i] for i, k in enumerate(self.kinds)}

    def centre_map(self, od: np.ndarray) -> np.ndarray:
        """The red-cell centre map alone, ``(h, w)``."""
        return self.centre_maps(od)["rbc"]

    def __call__(self, od: np.ndarray) -> dict[str, np.ndarray]:
        return self.centre_maps(od)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "arch": self.arch}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "arch": self.arch, "arch_kwargs": self.arch_kwargs,
            "kinds": list(self.kinds), "min_distance": self.min_distance, "provenance": self.provenance,
        }

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model folder (config, thresholds, weights, metrics)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", self.config())
        write_json(out / "thresholds.json", self.thresholds)
        write_torch(out / "weights.pt", cpu_state(self.net))
        if self.metrics:
            write_json(out / "metrics.json", self.metrics)
        if isinstance(self.pair_rule, PairNetJudge):
            self.pair_rule.save(out)
        elif isinstance(self.pair_rule, PairRule):
            write_json(out / "pair_rule.json", self.pair_rule.to_dict())
        self.folder = out
        return out


def build_untrained_localizer(
    arch: str = "locnet_tiny", seed: int = 0, kinds: tuple[str, ...] = ("rbc",), **arch_kwargs: Any
) -> CentreDetector:
    """A randomly initialised detector (for tests and as the start of training)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model(arch, num_classes=len(kinds), **arch_kwargs)
    return CentreDetector(net, arch=arch, arch_kwargs=dict(arch_kwargs), kinds=kinds, name=f"{arch}-untrained")


def load_localizer(path_or_name: str | os.PathLike[str] | None = None) -> CentreDetector:
    """Load a localizer folder: a path, a name under the models directory, or ``None`` for
    the shipped one. Raises :class:`MorphError` (``model_not_found``, ``bad_model``)."""
    folder = ModelFolder.open(path_or_name, DEFAULT_LOCALIZER_NAME, "localizer")
    cfg = folder.config()
    kwargs = dict(cfg.get("arch_kwargs") or {})
    kinds = tuple(cfg.get("kinds") or ("rbc",))
    if "rbc" not in kinds or not set(kinds) <= {"rbc", "nucleated", "platelet"}:
        raise folder.error("config.json", f"kinds must include 'rbc' and name cell kinds, got {list(kinds)}")
    net = create_model(cfg["arch"], num_classes=len(kinds), **kwargs)
    folder.load_weights(net)
    det = CentreDetector(
        net, arch=cfg["arch"], arch_kwargs=kwargs, kinds=kinds, thresholds=_thresholds(folder, cfg),
        min_distance=float(cfg.get("min_distance", 0.4)), pair_rule=_pair_rule(folder), name=str(cfg.get("name") or folder.path.name),
        version=str(cfg.get("version", "0.0.0")), metrics=folder.read_optional("metrics.json"),
        provenance=cfg.get("provenance") or {},
    )
    det.folder = folder.path
    return det


_FIRST, _SECOND = CROP_CHANNELS.index("first"), CROP_CHANNELS.index("second")


def mirrored_pairs(crops: torch.Tensor, along: bool, across: bool) -> torch.Tensor:
    """Pair pictures ``(N, C, h, w)`` seen mirrored: ``along`` the line through the two centres
    (the second region becomes the first) and/or ``across`` it. A pair is the same pair in
    all four views."""
    if along:
        order = list(range(crops.shape[1]))
        order[_FIRST], order[_SECOND] = _SECOND, _FIRST
        crops = crops.flip(3)[:, order]
    return crops.flip(2) if across else crops


@dataclass
class PairNetJudge:
    """The pair rule as a small network (:class:`morph.models.PairNet`) reading each pair's
    picture and measures, behind a logistic ``gate`` over the measures alone: a pair the gate
    rules out (most of a crowded field's pairs are plainly two cells) keeps the gate's
    probability and is never pictured. A pair's probability is the mean over both orders of
    its regions (the picture mirrored along the line through the centres).

    A localizer folder keeps it as ``pair_net.json`` (architecture, the measures' mean and
    scale, threshold, gate, provenance) and ``pair_net.pt`` (weights)."""

    net: nn.Module
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    threshold: float
    gate: PairRule | None = None
    arch: str = "pairnet"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    reads_crops: ClassVar[bool] = True
    #: pairs pictured at once
    batch: ClassVar[int] = 512

    def __post_init__(self) -> None:
        self.net = self.net.eval()
        self._fused: nn.Module | None = None

    def probability(self, features: np.ndarray, pictures: PairPictures | None = None) -> np.ndarray:
        if pictures is None:
            raise ValueError("a pair network reads the pairs' pictures (pair_crops)")
        features = np.asarray(features, dtype=np.float64)
        if self.gate is None:
            out, read = np.zeros(len(features)), np.arange(len(features))
        else:
            out = self.gate.probability(features)
            read = np.flatnonzero(out >= self.gate.threshold)
        if self._fused is None:
            self._fused = fuse_for_inference(self.net)  # conv + batch norm folded: same outputs, faster
        z = ((features - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)
        for k in range(0, len(read), self.batch):  # a 50-megapixel field has thousands of pairs
            which = read[k:k + self.batch]
            x = torch.from_numpy(np.ascontiguousarray(pictures(which), dtype=np.float32))
            with torch.inference_mode():
                logits = self._fused(torch.cat([x, mirrored_pairs(x, along=True, across=False)]),
                                     torch.from_numpy(z[which]).repeat(2, 1))
            out[which] = torch.sigmoid(logits[:, 0]).reshape(2, -1).mean(dim=0).numpy()
        return out

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "arch_kwargs": self.arch_kwargs, "features": list(PAIR_FEATURES),
                "crop_channels": list(CROP_CHANNELS), "mean": list(self.mean), "scale": list(self.scale),
                "threshold": self.threshold, "gate": self.gate.to_dict() if self.gate is not None else None,
                "provenance": self.provenance}

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``pair_net.json`` and ``pair_net.pt`` into a localizer folder."""
        out = Path(folder)
        write_json(out / "pair_net.json", self.config())
        write_torch(out / "pair_net.pt", cpu_state(self.net))


def _pair_rule(folder: ModelFolder) -> PairJudge | None:
    """The folder's pair rule: its network (``pair_net.json``), else its logistic rule
    (``pair_rule.json``), else None."""
    net = folder.read_optional("pair_net.json")
    if net is not None:
        return _pair_net(folder, net)
    got = folder.read_optional("pair_rule.json")
    if got is None:
        return None
    try:
        return PairRule.from_dict(dict(got))
    except (KeyError, TypeError, ValueError) as exc:
        raise folder.error("pair_rule.json", f"not a pair rule: {exc}") from exc


def _pair_net(folder: ModelFolder, cfg: Any) -> PairNetJudge:
    """The :class:`PairNetJudge` of ``pair_net.json`` (``cfg``) and ``pair_net.pt``."""
    try:
        if list(cfg["features"]) != list(PAIR_FEATURES) or list(cfg["crop_channels"]) != list(CROP_CHANNELS):
            raise ValueError(f"it reads other measures or pictures than {list(PAIR_FEATURES)}, {list(CROP_CHANNELS)}")
        mean, scale = (tuple(float(v) for v in cfg[k]) for k in ("mean", "scale"))
        threshold = float(cfg["threshold"])
        if len(mean) != len(PAIR_FEATURES) or len(scale) != len(PAIR_FEATURES) or not 0.0 <= threshold <= 1.0:
            raise ValueError("mean and scale need one number per measure and threshold lies in 0-1")
        gate = PairRule.from_dict(dict(cfg["gate"])) if cfg.get("gate") is not None else None
        arch, kwargs = str(cfg.get("arch", "pairnet")), dict(cfg.get("arch_kwargs") or {})
        net = create_model(arch, **kwargs)
    except (KeyError, TypeError, ValueError, MorphError) as exc:
        raise folder.error("pair_net.json", f"not a pair network: {exc}") from exc
    folder.load_weights(net, "pair_net.pt")
    return PairNetJudge(net, mean, scale, threshold, gate, arch, kwargs, dict(cfg.get("provenance") or {}))


def _thresholds(folder: ModelFolder, cfg: dict[str, Any]) -> dict[str, float]:
    """The peak threshold of each kind: ``thresholds.json``; folders written before it kept
    them in ``config.json`` (``thresholds``, or one red-cell ``threshold``)."""
    got = folder.read_optional("thresholds.json")
    name = "thresholds.json"
    if got is None:
        got, name = cfg.get("thresholds") or {"rbc": cfg.get("threshold", 0.35)}, "config.json"
    try:
        return {str(k): float(v) for k, v in dict(got).items()}
    except (TypeError, ValueError) as exc:
        raise folder.error(name, f"thresholds must map cell kinds to numbers, got {got!r}") from exc
