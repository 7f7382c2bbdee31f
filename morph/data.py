"""Crop data sets for training and evaluation: labelled points -> uint8 crops in memory.

Crops are cut once with :func:`morph.classify.extract_crops` (the same code path as
inference, at the model's physical scale) and kept as one ``uint8`` array, so an epoch
is pure tensor work. Augmentation (:func:`augment_batch`) respects morphology: any
rotation and flips, stain/colour jitter, blur and noise, never scaling (a normocyte
must not turn into a macrocyte). The split is by image, seeded, never by cell.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .classify import Preprocessing, balance_to_glass, extract_crops, resize_crops
from .errors import MorphError
from .io import ImageLimits, read_image
from .readers import LabelIssue, LabelledCrop, LabelledPoint

log = logging.getLogger(__name__)


@dataclass
class CropSet:
    """Crops with their labels (as strings), the image each came from, kind and stain."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    labels: list[str]
    groups: list[str]  # image id (the split unit)
    kinds: list[str]
    stains: list[str]
    sources: list[str] = field(default_factory=list)  # "chula", "synthetic", ...
    issues: list[LabelIssue] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Sequence[int] | np.ndarray) -> CropSet:
        idx = np.asarray(idx, dtype=np.int64)
        pick = idx.tolist()
        return CropSet(
            self.crops[idx], [self.labels[i] for i in pick], [self.groups[i] for i in pick],
            [self.kinds[i] for i in pick], [self.stains[i] for i in pick],
            [self.sources[i] for i in pick] if self.sources else [], list(self.issues),
        )

    @staticmethod
    def concat(sets: Iterable[CropSet]) -> CropSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            raise MorphError("empty_dataset", "no crops to concatenate")
        return CropSet(
            np.concatenate([s.crops for s in sets]),
            [x for s in sets for x in s.labels], [x for s in sets for x in s.groups],
            [x for s in sets for x in s.kinds], [x for s in sets for x in s.stains],
            [x for s in sets for x in (s.sources or ["?"] * len(s))],
            [x for s in sets for x in s.issues],
        )


def val_image_stems(split: Mapping[str, Any]) -> set[str]:
    """Image stems of a split's validation images (``split.json`` names them ``"<source>:<stem>"``)."""
    return {str(g).split(":", 1)[-1] for g in split.get("val_images", [])}


def split_groups(groups: Iterable[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of group ids (images) into (train, val); stable for a given seed."""
    uniq = sorted(set(groups), key=lambda g: (len(g), g))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    n_val = max(1, int(round(len(uniq) * val_fraction))) if len(uniq) > 1 else 0
    val = sorted((uniq[i] for i in order[:n_val]), key=lambda g: (len(g), g))
    train = sorted((uniq[i] for i in order[n_val:]), key=lambda g: (len(g), g))
    return train, val


def crops_from_points(
    points: Sequence[LabelledPoint],
    preprocessing: Preprocessing,
    field_um_per_px: float,
    *,
    kind_of: Callable[[str], str] | None = None,
    stain: str = "wright",
    source: str = "real",
    group_of: Callable[[str], str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> CropSet:
    """Read each image once and cut a crop at every labelled point.

    An image that cannot be read (corrupt, truncated) is skipped with all its
    points and recorded in ``issues``; the error names the file.
    """
    from .labels import kind_of as _kind_of

    kind_of = kind_of or _kind_of
    group_of = group_of or (lambda p: Path(p).stem)
    by_image: dict[str, list[LabelledPoint]] = defaultdict(list)
    for p in points:
        by_image[p.image_path].append(p)
    crops: list[np.ndarray] = []
    out = CropSet(np.zeros((0,), np.uint8), [], [], [], [], [], [])
    paths: Iterable[str] = list(by_image)
    if progress is not None:
        paths = progress(paths)
    for path in paths:
        pts = by_image[path]
        try:
            img = read_image(path)
        except MorphError as exc:
            out.issues.append(LabelIssue(path, f"{exc.message} [{exc.code}]; {len(pts)} label(s) skipped"))
            log.warning("skipped image %s: %s (%d labels)", path, exc.message, len(pts))
            continue
        crops.append(extract_crops(img, [(p.x, p.y) for p in pts], field_um_per_px, preprocessing))
        for p in pts:
            out.labels.append(p.label)
            out.groups.append(group_of(path))
            out.kinds.append(kind_of(p.label))
            out.stains.append(stain)
            out.sources.append(source)
    s = preprocessing.resolved().crop_size
    out.crops = np.concatenate(crops) if crops else np.zeros((0, s, s, 3), np.uint8)
    return out


def crops_from_files(
    items: Sequence[LabelledCrop], preprocessing: Preprocessing, *, stain: str = "wright", source: str = "real"
) -> CropSet:
    """Folder-per-class crops: each file is one centred cell, resized to the model's crop size.

    The crop files are assumed to be cut at the model's physical scale already.
    """
    from .labels import kind_of

    s = preprocessing.resolved().crop_size
    arrs: list[np.ndarray] = []
    out = CropSet(np.zeros((0,), np.uint8), [], [], [], [], [], [])
    for it in items:
        try:
            img = read_image(it.image_path, _CROP_LIMITS)
        except MorphError as exc:
            out.issues.append(LabelIssue(it.image_path, f"{exc.message} [{exc.code}]; skipped"))
            continue
        crop = resize_crops(img[None], s) if img.shape[:2] != (s, s) else img[None]
        # a crop file is its own field: its glass is the glass around the cell
        arrs.append(balance_to_glass(crop, img, preprocessing.glass_level))
        out.labels.append(it.label)
        out.groups.append(Path(it.image_path).stem)
        out.kinds.append(kind_of(it.label))
        out.stains.append(stain)
        out.sources.append(source)
    out.crops = np.concatenate(arrs) if arrs else np.zeros((0, s, s, 3), np.uint8)
    return out


#: Crop files are small: accept anything from 8 px up.
_CROP_LIMITS = ImageLimits(min_side=8)


def class_weights(label_idx: np.ndarray, num_classes: int, power: float = 0.5) -> np.ndarray:
    """Per-sample weights for class-balanced sampling: ``count ** -power`` per class
    (``power=1`` fully balanced, ``0`` natural frequencies)."""
    counts = np.bincount(label_idx, minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    return w[label_idx]


# --------------------------------------------------------------------------------------------
# augmentation (batched tensor ops; cheap on CPU)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AugmentConfig:
    """Morphology-preserving augmentation. No scaling, ever."""

    rotate: bool = True  # any angle (reflection padding) + the 8 dihedral symmetries
    flip: bool = True
    brightness: float = 0.10
    contrast: float = 0.12
    saturation: float = 0.12
    hue: float = 0.03  # per-channel gain spread approximating a stain hue shift
    blur_p: float = 0.2
    noise_std: float = 0.02
    translate_px: float = 2.0  # centre jitter (point labels are hand-placed)
    # Stain and scanner shifts (0 = off), so another lab's slides look like training data:
    stain_od: float = 0.0  # paler / darker staining: optical density x U(1 - s, 1 + s)
    stain_vector: float = 0.0  # per-channel optical-density gain spread (the stain's hue)
    blur_sigma: float = 0.0  # when blurred (blur_p), a Gaussian of sigma U(0.3, this) crop px
    jpeg_p: float = 0.0  # share of crops passed through a JPEG round trip at quality 25-90


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment a float batch ``(N, 3, H, W)`` in [0, 1] (before normalisation)."""
    n = x.shape[0]
    g = generator
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, device=dev)

    if cfg.flip:
        f = rand(n) < 0.5
        x = torch.where(f.view(-1, 1, 1, 1), x.flip(3), x)
        k = int(torch.randint(0, 4, (1,), generator=g).item())
        x = torch.rot90(x, k, dims=(2, 3))
    if cfg.rotate or cfg.translate_px > 0:
        theta = (rand(n) * 2 * math.pi) if cfg.rotate else torch.zeros(n)
        cos, sin = torch.cos(theta), torch.sin(theta)
        h = x.shape[-1]
        t = (rand(n, 2) * 2 - 1) * (2 * cfg.translate_px / h)
        mat = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
        grid = F.affine_grid(mat, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.stain_od or cfg.stain_vector:
        x = _jitter_optical_density(x, rand(n, 1, 1, 1), rand(n, 3, 1, 1), cfg)
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        b = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.brightness
        c = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.contrast
        s = 1 + (rand(n, 1, 1, 1) * 2 - 1) * cfg.saturation
        gains = 1 + (rand(n, 3, 1, 1) * 2 - 1) * cfg.hue
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean
        gray = x.mean(dim=1, keepdim=True)
        x = (x - gray) * s + gray
        x = x * b * gains
    if cfg.blur_p > 0:
        sel = rand(n) < cfg.blur_p
        if bool(sel.any()):
            x = x.clone()
            if cfg.blur_sigma > 0:
                x[sel] = gaussian_blur_each(x[sel], 0.3 + rand(int(sel.sum())) * max(cfg.blur_sigma - 0.3, 0.0))
            else:
                k1 = torch.tensor([0.25, 0.5, 0.25], device=dev)
                k2 = (k1[:, None] * k1[None, :]).expand(3, 1, 3, 3).contiguous()
                x[sel] = F.conv2d(F.pad(x[sel], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=g, device=dev) * (rand(n, 1, 1, 1) * cfg.noise_std)
    x = x.clamp_(0, 1)
    if cfg.jpeg_p > 0:
        x = _jpeg_some(x, rand(n) < cfg.jpeg_p, rand(n))
    return x


def _jitter_optical_density(x: torch.Tensor, u_scale: torch.Tensor, u_vec: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Scale each crop's optical density (Beer-Lambert: stain amount) by one factor and each
    channel by its own (the stain's colour), relative to the crop's brightest pixels (its glass)."""
    eps = 1.0 / 255
    glass = x.amax(dim=(2, 3), keepdim=True).clamp_min(eps)
    od = -torch.log((x / glass).clamp(eps, 1.0))
    gain = (1 + (u_scale * 2 - 1) * cfg.stain_od) * (1 + (u_vec * 2 - 1) * cfg.stain_vector)
    return glass * torch.exp(-od * gain)


def gaussian_blur_each(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own Gaussian ``sigma`` (N,), in pixels
    (separable, reflection at the borders: a defocused microscope)."""
    n, c, h, w = x.shape
    r = max(1, int(math.ceil(2.5 * float(sigma.max()))))
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    y = F.pad(x.reshape(1, n * c, h, w), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _jpeg_some(x: torch.Tensor, sel: torch.Tensor, u_quality: torch.Tensor) -> torch.Tensor:
    """A JPEG round trip (quality 25-90) for the selected crops: the compression of a lab's scanner."""
    from .shifts import encode_decode_jpeg

    if not bool(sel.any()):
        return x
    x = x.clone()
    for i in torch.nonzero(sel).flatten().tolist():
        img = (x[i].permute(1, 2, 0) * 255).round().byte().cpu().numpy()
        out = encode_decode_jpeg(img, int(25 + 65 * float(u_quality[i])))
        x[i] = torch.from_numpy(out).to(x.device).permute(2, 0, 1).float() / 255
    return x
