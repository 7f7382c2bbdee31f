"""The library's file reads and writes, with their checks.

Images: :func:`read_image` (a path) and :func:`decode_image` (bytes already in
memory, as the service receives them) return an RGB ``uint8`` array or raise a
:class:`~morph.errors.MorphError` that names the file and the reason. JSON, YAML, CSV,
text and torch files are read with the same care and written atomically. Labelled data
sets (Chula, YOLO, VOC, CSV, class folders) are read by :mod:`morph.readers` on top of these.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import MorphError

#: File endings treated as images when walking folders.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ImageLimits:
    """Guards applied to every decoded image.

    ``max_pixels`` stops decompression bombs before the pixels are decoded;
    ``min_side`` rejects images too small to hold one red cell (a normal red cell
    is ~45-50 px across at the default 1000x scale).
    """

    max_pixels: int = 50_000_000
    min_side: int = 32


DEFAULT_LIMITS = ImageLimits()


def _to_rgb_uint8(im: Image.Image, name: str) -> np.ndarray:
    """Convert any PIL mode we accept to an RGB uint8 array."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        # 16-bit data: scale the full 16-bit range (or the data range for 32-bit int)
        scale = 65535.0 if hi <= 65535 else hi
        arr8 = np.clip(arr / max(scale, 1.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.stack([arr8] * 3, axis=-1)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr8 = np.clip((arr - lo) / max(hi - lo, 1e-9) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.stack([arr8] * 3, axis=-1)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        # composite on a white background: a transparent area is empty glass
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba)
    try:
        rgb = im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise MorphError(
            "unsupported_image", f"cannot convert image mode {mode!r} to RGB ({exc})", path=name
        ) from exc
    return np.asarray(rgb, dtype=np.uint8).copy()


def _open_checked(fp: Any, name: str, limits: ImageLimits) -> np.ndarray:
    """Open, verify and decode an image from a file object."""
    try:
        with warnings.catch_warnings():
            # our own pixel limit is checked from the header below, before any decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise MorphError(
            "not_an_image", "not an image this reader understands (JPEG, PNG, TIFF, BMP)", path=name
        ) from exc
    except Image.DecompressionBombError as exc:
        raise MorphError(
            "image_too_large",
            f"image is too large to decode safely (limit {limits.max_pixels:,} pixels)",
            path=name,
            detail={"max_pixels": limits.max_pixels},
        ) from exc
    except OSError as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc})", path=name) from exc

    w, h = im.size
    if w * h > limits.max_pixels:
        raise MorphError(
            "image_too_large",
            f"image has {w}x{h} = {w * h:,} pixels, over the limit of {limits.max_pixels:,}",
            path=name,
            detail={"width": w, "height": h, "max_pixels": limits.max_pixels},
        )
    if min(w, h) < limits.min_side:
        raise MorphError(
            "image_too_small",
            f"image is {w}x{h} pixels, too small to hold a cell (minimum side {limits.min_side} px)",
            path=name,
            detail={"width": w, "height": h, "min_side": limits.min_side},
        )
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)  # multi-page TIFF: first page
        im.load()  # raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES stays False)
        im = ImageOps.exif_transpose(im) or im
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MorphError(
            "truncated_image", f"image data is truncated or corrupt ({exc})", path=name
        ) from exc
    except Image.DecompressionBombError as exc:  # pragma: no cover - caught above normally
        raise MorphError("image_too_large", str(exc), path=name) from exc
    return _to_rgb_uint8(im, name)


def read_image(path: str | os.PathLike[str], limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` RGB ``uint8`` array.

    JPEG, PNG, TIFF (8/16-bit, first page) and BMP; EXIF orientation applied;
    grayscale, palette and RGBA converted to RGB. Raises :class:`MorphError` with
    the path and reason for empty, truncated, non-image, too-large or too-small
    files.
    """
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise MorphError("file_not_found", "no such file", path=name)
    if p.is_dir():
        raise MorphError("unreadable_file", "this is a folder, not an image file", path=name)
    try:
        size = p.stat().st_size
        if size == 0:
            raise MorphError("empty_file", "the file is empty (0 bytes)", path=name)
        with open(p, "rb") as fh:
            data = fh.read()
    except MorphError:
        raise
    except OSError as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc.strerror or exc})", path=name) from exc
    return decode_image(data, name=name, limits=limits)


def decode_image(data: bytes, name: str = "<bytes>", limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode image bytes already in memory (see :func:`read_image`)."""
    if not data:
        raise MorphError("empty_file", "the file is empty (0 bytes)", path=name)
    return _open_checked(_io.BytesIO(data), name, limits)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB(A) uint8 array as PNG bytes."""
    buf = _io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB(A) uint8 array atomically (format from the suffix)."""
    p = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}.get(
        p.suffix.lower(), "PNG"
    )
    buf = _io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format=fmt)
    write_bytes_atomic(p, buf.getvalue())


def current_umask() -> int:
    """The process umask, read without changing it (Linux), else by setting it back at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _private_temp_beside(p: Path) -> tuple[int, str]:
    """A temporary file next to ``p`` for an atomic write, given the permissions the umask
    allows for a new file (0644 under umask 022): ``mkstemp`` makes it 0600, and the rename
    would otherwise hand that to the finished file, which the lab's group could not read."""
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    return fd, tmp


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to ``path`` through a temp file and a rename, so a killed
    process never leaves a torn file; the file gets the mode the umask allows."""
    p = Path(path)
    fd, tmp = _private_temp_beside(p)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically, UTF-8, indented for people."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def _read_text_parsed(path: str | os.PathLike[str], parse: Any, parse_errors: tuple[type[Exception], ...],
                      what: str, code: str) -> Any:
    """Read a UTF-8 text file and parse it, turning every failure into a MorphError naming the file."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return parse(fh)
    except FileNotFoundError as exc:
        raise MorphError("file_not_found", "no such file", path=name) from exc
    except parse_errors as exc:
        raise MorphError(code, f"not valid {what} ({exc})", path=name) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc})", path=name) from exc


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising :class:`MorphError` naming the file on failure."""
    # ValueError: an integer over 4,300 digits; RecursionError: arrays nested thousands deep
    return _read_text_parsed(path, json.load, (ValueError, RecursionError), "JSON", "bad_request")


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file, raising :class:`MorphError` naming the file on failure."""
    import yaml

    return _read_text_parsed(path, yaml.safe_load, (yaml.YAMLError,), "YAML", "bad_config")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (sorted), by suffix."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --- model files (torch) ---
def write_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """Save a torch object (state dict, checkpoint) atomically."""
    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_torch(path: str | os.PathLike[str]) -> Any:
    """Load a torch file saved by :func:`write_torch` (tensors and plain data only)."""
    import torch

    name = str(path)
    if not Path(path).is_file():
        raise MorphError("file_not_found", "no such file", path=name)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise MorphError("bad_model", f"cannot load torch file ({exc})", path=name) from exc


def read_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file, raising :class:`MorphError` naming the file on failure."""
    name = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError as exc:
        raise MorphError("file_not_found", "no such file", path=name) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc})", path=name) from exc


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


# --- batch outputs ---  (owner: BATCH helper; `morph score` inputs hashing, CSV/JSON outputs)
def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (streamed), raising :class:`MorphError` naming the file."""
    import hashlib

    name = str(path)
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while True:
                block = fh.read(chunk_size)
                if not block:
                    break
                h.update(block)
    except FileNotFoundError as exc:
        raise MorphError("file_not_found", "no such file", path=name) from exc
    except IsADirectoryError as exc:
        raise MorphError("unreadable_file", "this is a folder, not an image file", path=name) from exc
    except OSError as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc.strerror or exc})", path=name) from exc
    return h.hexdigest()


class _AtomicTextFile:
    """Context manager behind :func:`open_atomic_text`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = ""
        self._fh: Any = None

    def __enter__(self) -> Any:
        fd, self._tmp = _private_temp_beside(self.path)
        self._fh = os.fdopen(fd, "w", encoding="utf-8", newline="")
        return self._fh

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._fh.flush()
                os.fsync(self._fh.fileno())
            self._fh.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
                return
        except BaseException:
            _unlink_quietly(self._tmp)
            raise
        _unlink_quietly(self._tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def open_atomic_text(path: str | os.PathLike[str]) -> Any:
    """Open a UTF-8 text file for streaming writes that appear atomically on success.

    ``with open_atomic_text(p) as fh: ...`` writes to a temp file next to ``p`` and renames
    it over ``p`` only when the block ends without an exception (a killed process leaves
    the old file, never a torn one). Memory stays flat however much is written.
    """
    return _AtomicTextFile(Path(path))


def write_csv(
    path: str | os.PathLike[str], header: list[str] | tuple[str, ...], rows: Any
) -> int:
    """Write a CSV (header + rows, ``\\n`` line ends, UTF-8) atomically; returns the row count.

    ``rows`` is any iterable of sequences; ``None`` is written as an empty cell; rows are streamed, not held in memory.
    """
    import csv

    n = 0
    with open_atomic_text(path) as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(list(header))
        for row in rows:
            w.writerow(["" if v is None else v for v in row])
            n += 1
    return n


def read_csv_rows(path: str | os.PathLike[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV with a header row: ``(columns, [(line_number, {column: text}), ...])``.

    Cells are stripped of surrounding spaces; blank lines are skipped. Raises
    :class:`MorphError` naming the file (``bad_config`` for a malformed CSV).
    """
    import csv

    name = str(path)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise MorphError("bad_config", "the CSV file is empty (no header row)", path=name) from None
            if len(set(header)) != len(header) or any(not h for h in header):
                raise MorphError("bad_config", f"the header has blank or repeated columns: {header}", path=name)
            rows: list[tuple[int, dict[str, str]]] = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue
                if len(values) > len(header):
                    raise MorphError(
                        "bad_config",
                        f"line {reader.line_num} has {len(values)} cells but the header has {len(header)}",
                        path=name,
                    )
                values = values + [""] * (len(header) - len(values))
                rows.append((reader.line_num, {h: v.strip() for h, v in zip(header, values, strict=True)}))
    except MorphError:
        raise
    except FileNotFoundError as exc:
        raise MorphError("file_not_found", "no such file", path=name) from exc
    except csv.Error as exc:
        raise MorphError("bad_config", f"not a valid CSV file ({exc})", path=name) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise MorphError("unreadable_file", f"cannot read the file ({exc})", path=name) from exc
    return header, rows


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files left under ``folder`` by an atomic write that was killed midway.

    Only names made by :func:`write_bytes_atomic` / :func:`open_atomic_text`
    (``.<name>.<random>.tmp``) are touched. Returns the removed paths.
    """
    import re

    pattern = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if pattern.match(f):
                p = Path(dirpath) / f
                try:
                    p.unlink()
                    removed.append(p)
                except OSError:
                    pass
    return removed
