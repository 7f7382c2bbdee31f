"""Every file read and write of the library, with its checks.

Images: :func:`read_image` (a path) and :func:`decode_image` (bytes already in
memory, as the service receives them) return an RGB ``uint8`` array or raise a
:class:`~morph.errors.MorphError` that names the file and the reason.
"""

from __future__ import annotations

import io as _io
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
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


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to ``path`` through a temp file and a rename, so a killed
    process never leaves a torn file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
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
    return _read_text_parsed(path, json.load, (json.JSONDecodeError,), "JSON", "bad_request")


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read a YAML file, raising :class:`MorphError` naming the file on failure."""
    import yaml

    return _read_text_parsed(path, yaml.safe_load, (yaml.YAMLError,), "YAML", "bad_config")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly in ``folder`` (sorted), by suffix."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --- label readers ---  (owner: CLS helper; model files and labelled-data readers)
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
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


# --- label readers (continued) ---  (owner: CLS helper; Chula/YOLO/VOC/CSV/folder labelled data)
@dataclass(frozen=True)
class LabelledPoint:
    """One labelled cell: its centre in an image and its vocabulary label.

    ``source_line`` names where it came from (``labels/12.txt:3``) so problems can be
    traced back; ``bbox`` is set when the source gave a box (YOLO, VOC).
    """

    image_path: str
    x: float
    y: float
    label: str
    source_line: str
    bbox: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class LabelledCrop:
    """One ready-cut cell crop from a folder-per-class data set."""

    image_path: str
    label: str
    source_line: str


@dataclass(frozen=True)
class LabelIssue:
    """A labelled item that was skipped, and why (reported, never fatal on its own)."""

    path: str
    message: str


@dataclass
class LabelledData:
    """Everything one reader found: points (or crops) and the skipped items."""

    format: str
    root: str
    points: list[LabelledPoint]
    crops: list[LabelledCrop]
    issues: list[LabelIssue]

    def labels(self) -> list[str]:
        return [p.label for p in self.points] + [c.label for c in self.crops]


#: Formats :func:`read_labelled_data` understands.
LABEL_FORMATS: tuple[str, ...] = ("chula", "yolo", "voc", "csv", "folder")


def read_label_mapping(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """Read a mapping file (YAML): ``classes: {source class: vocabulary label or null}``.

    Source classes may be numbers (Chula, YOLO) or names (VOC, CSV, folders); ``null``
    means "skip this class". Every target must be a vocabulary label.
    """
    from .labels import ALL_LABELS, PLATELET, UNIDENTIFIED

    raw = read_yaml(path)
    classes = raw.get("classes") if isinstance(raw, dict) else None
    if not isinstance(classes, dict) or not classes:
        raise MorphError("bad_config", "a mapping file needs a non-empty 'classes:' table", path=str(path))
    out: dict[str, str | None] = {}
    for k, v in classes.items():
        if v is not None and (v not in ALL_LABELS or v in (UNIDENTIFIED,)) and v != PLATELET:
            raise MorphError(
                "bad_config",
                f"class {k!r} maps to {v!r}, which is not a vocabulary label (see morph/labels.py)",
                path=str(path),
            )
        out[str(k).strip()] = v
    return out


def _default_mapping(fmt: str) -> dict[str, str | None] | None:
    if fmt == "chula":
        from .labels import CHULA_CLASSES

        return {str(k): v for k, v in CHULA_CLASSES.items()}
    return None  # names must already be vocabulary labels


def _map_label(raw: str, mapping: dict[str, str | None] | None, where: str) -> tuple[str | None, LabelIssue | None]:
    """Map a raw class to a label; (None, None) = deliberately skipped, (None, issue) = unknown."""
    from .labels import ALL_LABELS, UNIDENTIFIED

    key = raw.strip()
    if mapping is not None:
        if key in mapping:
            return mapping[key], None
        return None, LabelIssue(where, f"unknown class {key!r} (not in the mapping: {', '.join(mapping)})")
    if key in ALL_LABELS and key != UNIDENTIFIED:
        return key, None
    return None, LabelIssue(where, f"unknown class {key!r} (not a vocabulary label; give a mapping file)")


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when it cannot be opened."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def _find_image(folder: Path, stem: str) -> Path | None:
    for suf in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        p = folder / f"{stem}{suf}"
        if p.is_file():
            return p
    return None


def _check_point(
    img: Path, sizes: dict[Path, tuple[int, int] | None], x: float, y: float, where: str, issues: list[LabelIssue]
) -> bool:
    """True when (x, y) lies inside a readable image; otherwise records why (an
    unreadable image is reported once, not once per label)."""
    if img not in sizes:
        sizes[img] = _image_size(img)
        if sizes[img] is None:
            issues.append(LabelIssue(str(img), "image cannot be opened (corrupt or not an image); its labels are skipped"))
    size = sizes[img]
    if size is None:
        return False
    w, h = size
    if not (0 <= x < w and 0 <= y < h):
        issues.append(LabelIssue(where, f"point ({x:g}, {y:g}) is outside its {w}x{h} image {img.name}"))
        return False
    return True


def _label_records(
    lf: Path, n_fields: int, layout: str, issues: list[LabelIssue]
) -> Iterator[tuple[str, list[float]]]:
    """Numeric records of a whitespace-separated label file, one per non-blank line, as
    ``(where, values)``. An unreadable file or a malformed line becomes a
    :class:`LabelIssue` (naming the file and line) and is skipped."""
    try:
        lines = lf.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        issues.append(LabelIssue(str(lf), f"cannot read ({exc})"))
        return
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{lf}:{n}"
        parts = line.split()
        try:
            if len(parts) != n_fields:
                raise ValueError
            values = [float(v) for v in parts]
        except ValueError:
            issues.append(LabelIssue(where, f"expected '{layout}', got {line.strip()!r}"))
            continue
        yield where, values


def _map_class(
    c: float, mapping: dict[str, str | None] | None, where: str
) -> tuple[str | None, LabelIssue | None]:
    """:func:`_map_label` for a numeric class field (which must be a whole number)."""
    try:
        cls = str(int(c))
    except (ValueError, OverflowError):
        return None, LabelIssue(where, f"class {c!r} is not a whole number")
    return _map_label(cls, mapping, where)


def read_chula_points(
    root: str | os.PathLike[str], mapping: dict[str, str | None] | None = None
) -> LabelledData:
    """Chula RBC-12 layout: ``images/<id>.jpg`` + ``labels/<id>.txt`` with ``x y class`` lines."""
    base = Path(root)
    lab_dir, img_dir = base / "labels", base / "images"
    if not lab_dir.is_dir() or not img_dir.is_dir():
        raise MorphError("empty_dataset", "expected 'images/' and 'labels/' folders (Chula layout)", path=str(base))
    mapping = mapping if mapping is not None else _default_mapping("chula")
    points: list[LabelledPoint] = []
    issues: list[LabelIssue] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    for lf in sorted(lab_dir.glob("*.txt"), key=lambda p: (len(p.stem), p.stem)):
        img = _find_image(img_dir, lf.stem)
        if img is None:
            issues.append(LabelIssue(str(lf), f"no image {lf.stem}.* in {img_dir}"))
            continue
        for where, (x, y, c) in _label_records(lf, 3, "x y class", issues):
            label, issue = _map_class(c, mapping, where)
            if issue:
                issues.append(issue)
            if label is None:
                continue
            if not _check_point(img, sizes, x, y, where, issues):
                continue
            points.append(LabelledPoint(str(img), x, y, label, where))
    return LabelledData("chula", str(base), points, [], issues)


def read_yolo_boxes(
    root: str | os.PathLike[str], mapping: dict[str, str | None] | None = None, split: str | None = None
) -> LabelledData:
    """YOLO layout: ``images/[split/]<name>.jpg`` + ``labels/[split/]<name>.txt`` with
    ``class cx cy w h`` lines normalised to 0..1. Points are the box centres.

    Without a mapping, class numbers map through ``data.yaml`` names (which must then be
    vocabulary labels).
    """
    base = Path(root)
    lab_dir, img_dir = base / "labels", base / "images"
    if split:
        lab_dir, img_dir = lab_dir / split, img_dir / split
    if not lab_dir.is_dir() or not img_dir.is_dir():
        raise MorphError("empty_dataset", f"expected '{img_dir.relative_to(base)}/' and '{lab_dir.relative_to(base)}/' (YOLO layout)", path=str(base))
    if mapping is None and (base / "data.yaml").is_file():
        names = (read_yaml(base / "data.yaml") or {}).get("names")
        if isinstance(names, dict):
            mapping = {str(k): str(v) for k, v in names.items()}
        elif isinstance(names, list):
            mapping = {str(i): str(v) for i, v in enumerate(names)}
        if mapping is not None:
            from .labels import ALL_LABELS, PLATELET

            mapping = {k: (v if v in ALL_LABELS or v == PLATELET else None) for k, v in mapping.items()}
    points: list[LabelledPoint] = []
    issues: list[LabelIssue] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    for lf in sorted(lab_dir.rglob("*.txt")):
        rel = lf.relative_to(lab_dir).with_suffix("")
        img = _find_image(img_dir / rel.parent, rel.name)
        if img is None:
            issues.append(LabelIssue(str(lf), f"no image for these labels in {img_dir / rel.parent}"))
            continue
        if img not in sizes:
            sizes[img] = _image_size(img)
        size = sizes[img]
        if size is None:
            issues.append(LabelIssue(str(img), "image cannot be opened (corrupt or not an image); its labels are skipped"))
            continue
        w, h = size
        for where, (c, cx, cy, bw, bh) in _label_records(lf, 5, "class cx cy w h", issues):
            label, issue = _map_class(c, mapping, where)
            if issue:
                issues.append(issue)
            if label is None:
                continue
            if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < bw <= 1 and 0 < bh <= 1):
                issues.append(LabelIssue(where, f"box ({cx:g}, {cy:g}, {bw:g}, {bh:g}) is outside its image (values must be 0..1)"))
                continue
            x, y = cx * w, cy * h
            box = (max(0.0, x - bw * w / 2), max(0.0, y - bh * h / 2), min(float(w), x + bw * w / 2), min(float(h), y + bh * h / 2))
            points.append(LabelledPoint(str(img), x, y, label, where, box))
    return LabelledData("yolo", str(base), points, [], issues)


def read_voc(
    root: str | os.PathLike[str], mapping: dict[str, str | None] | None = None
) -> LabelledData:
    """Pascal VOC: ``Annotations/*.xml`` (or ``*.xml`` in ``root``) with ``<object><name>``
    and ``<bndbox>``; images in ``JPEGImages/`` or next to the XML. Points are box centres."""
    import xml.etree.ElementTree as ET

    base = Path(root)
    ann_dir = base / "Annotations" if (base / "Annotations").is_dir() else base
    img_dirs = [d for d in (base / "JPEGImages", base / "images", ann_dir, base) if d.is_dir()]
    points: list[LabelledPoint] = []
    issues: list[LabelIssue] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise MorphError("empty_dataset", "no VOC annotation files (*.xml) found", path=str(ann_dir))
    for xf in xmls:
        try:
            tree = ET.parse(xf).getroot()
        except (ET.ParseError, OSError) as exc:
            issues.append(LabelIssue(str(xf), f"not valid VOC XML ({exc})"))
            continue
        fname = (tree.findtext("filename") or "").strip()
        img = next((d / fname for d in img_dirs if fname and (d / fname).is_file()), None)
        if img is None:
            img = next((p for d in img_dirs if (p := _find_image(d, xf.stem)) is not None), None)
        if img is None:
            issues.append(LabelIssue(str(xf), f"image {fname or xf.stem!r} not found"))
            continue
        for n, obj in enumerate(tree.iter("object"), 1):
            where = f"{xf}:object{n}"
            name = (obj.findtext("name") or "").strip()
            label, issue = _map_label(name, mapping, where)
            if issue:
                issues.append(issue)
            if label is None:
                continue
            bb = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr]
                if not (x1 > x0 and y1 > y0):
                    raise ValueError
            except (AttributeError, ValueError):
                issues.append(LabelIssue(where, "missing or invalid <bndbox>"))
                continue
            x, y = (x0 + x1) / 2, (y0 + y1) / 2
            if not _check_point(img, sizes, x, y, where, issues):
                continue
            points.append(LabelledPoint(str(img), x, y, label, where, (x0, y0, x1, y1)))
    return LabelledData("voc", str(base), points, [], issues)


def read_csv_points(
    path: str | os.PathLike[str], mapping: dict[str, str | None] | None = None
) -> LabelledData:
    """A CSV with a header ``image,x,y,label``; image paths relative to the CSV's folder.
    ``path`` may be the CSV or a folder holding exactly one ``*.csv``."""
    import csv

    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.csv"))
        if len(found) != 1:
            raise MorphError("empty_dataset", f"expected one *.csv in the folder, found {len(found)}", path=str(p))
        p = found[0]
    if not p.is_file():
        raise MorphError("file_not_found", "no such CSV file", path=str(p))
    points: list[LabelledPoint] = []
    issues: list[LabelIssue] = []
    sizes: dict[Path, tuple[int, int] | None] = {}
    with open(p, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"image", "x", "y", "label"}
        if not reader.fieldnames or not need <= {f.strip() for f in reader.fieldnames}:
            raise MorphError("bad_label_file", f"CSV header must have columns {', '.join(sorted(need))}", path=str(p))
        for n, row in enumerate(reader, 2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            where = f"{p}:{n}"
            try:
                x, y = float(row["x"]), float(row["y"])
            except ValueError:
                issues.append(LabelIssue(where, f"x and y must be numbers, got {row['x']!r}, {row['y']!r}"))
                continue
            label, issue = _map_label(row["label"], mapping, where)
            if issue:
                issues.append(issue)
            if label is None:
                continue
            img = (p.parent / row["image"]).resolve() if not Path(row["image"]).is_absolute() else Path(row["image"])
            if not img.is_file():
                issues.append(LabelIssue(where, f"image {row['image']!r} not found"))
                continue
            if not _check_point(img, sizes, x, y, where, issues):
                continue
            points.append(LabelledPoint(str(img), x, y, label, where))
    return LabelledData("csv", str(p), points, [], issues)


def read_class_folders(
    root: str | os.PathLike[str], mapping: dict[str, str | None] | None = None
) -> LabelledData:
    """Folder per class: ``root/<class>/<crop>.png``, each image one centred cell."""
    base = Path(root)
    if not base.is_dir():
        raise MorphError("file_not_found", "no such folder", path=str(base))
    crops: list[LabelledCrop] = []
    issues: list[LabelIssue] = []
    for d in sorted(q for q in base.iterdir() if q.is_dir() and not q.name.startswith(".")):
        label, issue = _map_label(d.name, mapping, str(d))
        if issue:
            issues.append(issue)
        if label is None:
            continue
        files = list_images(d)
        if not files:
            issues.append(LabelIssue(str(d), f"class folder {d.name!r} holds no images"))
        crops.extend(LabelledCrop(str(f), label, str(f)) for f in files)
    return LabelledData("folder", str(base), [], crops, issues)


def read_labelled_data(
    root: str | os.PathLike[str],
    fmt: str,
    mapping: str | os.PathLike[str] | dict[str, str | None] | None = None,
    split: str | None = None,
) -> LabelledData:
    """Read labelled cells in any supported format, mapped onto the vocabulary.

    Bad items (a point outside its image, an unknown class, an unreadable image or
    line) are skipped and listed in ``issues``; a data set with no usable example at
    all raises ``MorphError("empty_dataset")`` naming the folder.
    """
    import logging

    if fmt not in LABEL_FORMATS:
        raise MorphError("bad_request", f"unknown label format {fmt!r}; use one of {', '.join(LABEL_FORMATS)}")
    base = Path(root)
    if not base.exists():
        raise MorphError("file_not_found", "no such data folder", path=str(base))
    m = read_label_mapping(mapping) if isinstance(mapping, str | os.PathLike) else mapping
    if fmt == "chula":
        data = read_chula_points(base, m)
    elif fmt == "yolo":
        data = read_yolo_boxes(base, m, split)
    elif fmt == "voc":
        data = read_voc(base, m)
    elif fmt == "csv":
        data = read_csv_points(base, m)
    else:
        data = read_class_folders(base, m)
    logger = logging.getLogger(__name__)
    for iss in data.issues[:20]:
        logger.warning("skipped: %s: %s", iss.path, iss.message)
    if len(data.issues) > 20:
        logger.warning("... and %d more skipped items", len(data.issues) - 20)
    if not data.points and not data.crops:
        raise MorphError(
            "empty_dataset",
            f"no usable labelled cells found ({len(data.issues)} item(s) skipped)",
            path=str(base),
            detail=[f"{i.path}: {i.message}" for i in data.issues[:10]],
        )
    return data
