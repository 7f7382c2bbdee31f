"""Controlled shifts of a smear field: stain, colour, optics, compression, noise, scale and
blank areas, as pure functions (arrays in, arrays out).

They are what a field from another laboratory, camera or scanner does to an image, each with
one severity knob, so the robustness benchmark (``benchmarks/robustness.py``) can measure the
localizer and the classifier under each alone, and training can reuse them as augmentation.

Every function takes an ``(H, W, 3)`` RGB ``uint8`` image and returns a new ``uint8`` array
(the input is never modified); those that draw random numbers take a ``seed`` so the same
call gives the same picture. Stain changes work in optical density ``log(glass / pixel)``
(Beer-Lambert: a paler or darker stain scales the density, a different dye mix turns it),
so the glass stays glass.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import MorphError

# ----------------------------------------------------------------------------- helpers


def _rgb(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise MorphError("bad_request", f"expected an (H, W, 3) uint8 RGB image, got {a.dtype} {a.shape}")
    return a


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _positive(name: str, value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise MorphError("bad_request", f"{name} must be a positive number, got {value!r}")
    return float(value)


def glass_colour(image: np.ndarray) -> np.ndarray:
    """The colour of the empty glass: the median of the brightest tenth of the pixels
    (float32, 3 values, at least 1 so densities stay finite)."""
    rgb = _rgb(image).reshape(-1, 3).astype(np.float32)
    grey = rgb.mean(axis=1)
    bright = rgb[grey >= np.percentile(grey, 90)]
    return np.maximum(np.median(bright, axis=0), 1.0).astype(np.float32)


def to_optical_density(image: np.ndarray, glass: np.ndarray | None = None) -> np.ndarray:
    """Signed optical density ``log(glass / pixel)`` per channel, (H, W, 3) float32."""
    g = glass_colour(image) if glass is None else np.asarray(glass, np.float32)
    return np.log(g / np.maximum(_rgb(image).astype(np.float32), 1.0)).astype(np.float32)


def from_optical_density(od: np.ndarray, glass: np.ndarray) -> np.ndarray:
    """The RGB image of an optical density map over a glass colour (inverse of the above)."""
    return _to_uint8(np.asarray(glass, np.float32) * np.exp(-np.asarray(od, np.float32)))


# ----------------------------------------------------------------------------- stain and colour


def scale_stain(image: np.ndarray, factor: float, glass: np.ndarray | None = None) -> np.ndarray:
    """Paler (``factor`` < 1) or darker (> 1) staining: the optical density times ``factor``."""
    f = _positive("factor", factor)
    g = glass_colour(image) if glass is None else np.asarray(glass, np.float32)
    return from_optical_density(to_optical_density(image, g) * f, g)


def hue_rotation(degrees: float) -> np.ndarray:
    """The 3x3 matrix turning an optical-density vector by ``degrees`` about the grey axis
    (1, 1, 1) (Rodrigues): its total density (how much stain) stays, its hue changes. Training
    applies it to crops as stain augmentation; :func:`rotate_stain_hue` to images."""
    k = np.full(3, 1.0 / math.sqrt(3.0))
    t = math.radians(float(degrees))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return (math.cos(t) * np.eye(3) + math.sin(t) * cross + (1.0 - math.cos(t)) * np.outer(k, k)).astype(np.float32)


def rotate_stain_hue(image: np.ndarray, degrees: float, glass: np.ndarray | None = None) -> np.ndarray:
    """Another dye mix: each pixel's optical-density vector turned by ``degrees`` about the grey
    axis (1, 1, 1) (:func:`hue_rotation`), so its total density stays and its hue changes."""
    g = glass_colour(image) if glass is None else np.asarray(glass, np.float32)
    return from_optical_density(to_optical_density(image, g) @ hue_rotation(degrees).T, g)


def white_balance(image: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """A camera's white balance: each channel times its gain (R, G, B), clipped to 0..255."""
    gs = [_positive("gain", float(v)) for v in gains]
    if len(gs) != 3:
        raise MorphError("bad_request", f"gains needs three values (R, G, B), got {len(gs)}")
    return _to_uint8(_rgb(image).astype(np.float32) * np.asarray(gs, np.float32))


def adjust_saturation(image: np.ndarray, factor: float) -> np.ndarray:
    """Colour saturation times ``factor`` around each pixel's grey value (0 gives grey)."""
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor >= 0):
        raise MorphError("bad_request", f"factor must be a number >= 0, got {factor!r}")
    a = _rgb(image).astype(np.float32)
    grey = a.mean(axis=2, keepdims=True)
    return _to_uint8(grey + (a - grey) * float(factor))


def adjust_brightness_gamma(image: np.ndarray, brightness: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Exposure and display curve: ``255 * brightness * (pixel / 255) ** gamma``, clipped."""
    b, gm = _positive("brightness", brightness), _positive("gamma", gamma)
    a = _rgb(image).astype(np.float32) / 255.0
    return _to_uint8(255.0 * b * np.power(a, gm))


# ----------------------------------------------------------------------------- optics and camera


def defocus(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Out-of-focus blur: a Gaussian of ``sigma_px`` pixels on each channel."""
    s = _positive("sigma_px", sigma_px)
    return _to_uint8(ndi.gaussian_filter(_rgb(image).astype(np.float32), (s, s, 0), mode="nearest"))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after saving as JPEG at ``quality`` (1-95) and reading back (in memory)."""
    if not (isinstance(quality, int) and 1 <= quality <= 95):
        raise MorphError("bad_request", f"quality must be an integer in 1..95, got {quality!r}")
    return encode_decode_jpeg(_rgb(image), quality)


def encode_decode_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The JPEG round trip itself, unchecked: callers check ``quality`` by their own rule."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def add_sensor_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Camera noise: shot noise that grows with the signal, ``sigma`` grey levels at white
    (``sigma * sqrt(pixel / 255)``), plus read noise of a quarter of that everywhere."""
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma >= 0):
        raise MorphError("bad_request", f"sigma must be a number >= 0, got {sigma!r}")
    a = _rgb(image).astype(np.float32)
    rng = np.random.default_rng(seed)
    std = float(sigma) * np.sqrt(a / 255.0 + 1.0 / 16.0)
    return _to_uint8(a + rng.standard_normal(a.shape, dtype=np.float32) * std)


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """The field seen at ``factor`` times the magnification (0.5: half the pixels across),
    resampled with an antialiasing filter; divide ``um_per_px`` by ``factor`` to match."""
    from PIL import Image

    f = _positive("factor", factor)
    a = _rgb(image)
    h, w = a.shape[:2]
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    return np.asarray(Image.fromarray(a).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8).copy()


# ----------------------------------------------------------------------------- blank areas


def fill_region(image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """Paint the ``mask`` pixels one colour: a label box, an over-exposed corner, a blank area."""
    out = _rgb(image).copy()
    m = np.asarray(mask, dtype=bool)
    if m.shape != out.shape[:2]:
        raise MorphError("bad_request", f"mask shape {m.shape} does not match the image {out.shape[:2]}")
    out[m] = np.asarray(colour, np.uint8)
    return out


def pad(image: np.ndarray, width: int, colour: Sequence[int] = (255, 255, 255)) -> np.ndarray:
    """A border of ``width`` pixels of one colour on every side (a padded export or scan)."""
    if not (isinstance(width, int) and width >= 0):
        raise MorphError("bad_request", f"width must be an integer >= 0, got {width!r}")
    a = _rgb(image)
    out = np.empty((a.shape[0] + 2 * width, a.shape[1] + 2 * width, 3), np.uint8)
    out[:] = np.asarray(colour, np.uint8)
    out[width:width + a.shape[0], width:width + a.shape[1]] = a
    return out


def with_transparency(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """An RGBA image whose ``mask`` pixels are fully transparent, their colour black (0, 0, 0, 0),
    as many exporters write the empty part of a canvas."""
    a = _rgb(image)
    m = np.asarray(mask, dtype=bool)
    if m.shape != a.shape[:2]:
        raise MorphError("bad_request", f"mask shape {m.shape} does not match the image {a.shape[:2]}")
    out = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    out[m] = 0
    return out


def corner_box(shape: tuple[int, ...], fraction: float, corner: str = "bottom-right") -> np.ndarray:
    """A boolean mask of a rectangle (the field's aspect ratio) covering ``fraction`` of the
    field in one corner (``top-left``, ``top-right``, ``bottom-left``, ``bottom-right``)."""
    if not 0.0 < fraction <= 1.0:
        raise MorphError("bad_request", f"fraction must be in (0, 1], got {fraction!r}")
    h, w = int(shape[0]), int(shape[1])
    bh, bw = max(1, int(round(h * math.sqrt(fraction)))), max(1, int(round(w * math.sqrt(fraction))))
    m = np.zeros((h, w), bool)
    ys = slice(0, bh) if corner.startswith("top") else slice(h - bh, h)
    xs = slice(0, bw) if corner.endswith("left") else slice(w - bw, w)
    m[ys, xs] = True
    return m


def glass_map(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """A smooth per-pixel glass colour (H, W, 3) float32: the glass pixels (within a few grey
    levels of the brightest ones) spread over the cells by normalised convolution, so vignetting
    and gradients are kept."""
    a = _rgb(image).astype(np.float32)
    grey = a.mean(axis=2)
    top = float(np.percentile(grey, 98))
    glass = (grey >= top - 25.0).astype(np.float32)
    s = float(sigma) if sigma is not None else max(a.shape[:2]) / 12.0
    wsum = ndi.gaussian_filter(glass, s, mode="nearest")
    num = ndi.gaussian_filter(a * glass[:, :, None], (s, s, 0), mode="nearest")
    fallback = glass_colour(image)
    return np.where(wsum[:, :, None] > 1e-3, num / np.maximum(wsum, 1e-6)[:, :, None], fallback).astype(np.float32)


def replace_with_glass(image: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The ``mask`` pixels become empty glass: the field's own smooth glass colour plus noise
    as strong as the glass's own, so a field can be made sparse (most cells removed)."""
    a = _rgb(image)
    m = np.asarray(mask, dtype=bool)
    if m.shape != a.shape[:2]:
        raise MorphError("bad_request", f"mask shape {m.shape} does not match the image {a.shape[:2]}")
    gm = glass_map(a)
    grey = a.mean(axis=2)
    is_glass = grey >= float(np.percentile(grey, 98)) - 25.0
    resid = a.astype(np.float32)[is_glass] - gm[is_glass]
    noise = float(np.median(np.abs(resid))) * 1.4826 if resid.size else 0.0
    rng = np.random.default_rng(seed)
    fill = gm + rng.standard_normal(gm.shape, dtype=np.float32) * noise
    out = a.copy()
    out[m] = _to_uint8(fill[m])
    return out


def mosaic(tiles: Sequence[np.ndarray], height: int, width: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """A large field of ``height`` x ``width`` pixels tiled from same-sized fields in reading
    order (cycling through ``tiles``), as a slide scanner stitches one. Returns the image and,
    per placed tile, ``(tile index, y0, x0)`` of its top-left corner (the last row and column
    are cut at the edge)."""
    if not tiles:
        raise MorphError("bad_request", "mosaic needs at least one tile")
    th, tw = _rgb(tiles[0]).shape[:2]
    if any(_rgb(t).shape[:2] != (th, tw) for t in tiles):
        raise MorphError("bad_request", "mosaic tiles must all have the same size")
    out = np.empty((height, width, 3), np.uint8)
    placed: list[tuple[int, int, int]] = []
    i = 0
    for y0 in range(0, height, th):
        for x0 in range(0, width, tw):
            t = tiles[i % len(tiles)]
            hh, ww = min(th, height - y0), min(tw, width - x0)
            out[y0:y0 + hh, x0:x0 + ww] = t[:hh, :ww]
            placed.append((i % len(tiles), y0, x0))
            i += 1
    return out, placed
