"""Labelled cells from the formats data sets come in, mapped onto the vocabulary.

:func:`read_labelled_data` reads Chula RBC-12 points, YOLO boxes, Pascal VOC boxes, CSV points
or folder-per-class crops; a mapping file (:func:`read_label_mapping`) names the vocabulary
label of each source class. Bad items (a point outside its image, an unknown class, an
unreadable image or line) are skipped and listed as :class:`LabelIssue`, never fatal on their
own. Training, evaluation and the data loaders read labels here; images are read by
:mod:`morph.io`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import MorphError
from .io import IMAGE_SUFFIXES, list_images, read_yaml
from .labels import ALL_LABELS, CHULA_CLASSES, PLATELET, UNIDENTIFIED

log = logging.getLogger(__name__)


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
        return {str(k): v for k, v in CHULA_CLASSES.items()}
    return None  # names must already be vocabulary labels


def _map_label(raw: str, mapping: dict[str, str | None] | None, where: str) -> tuple[str | None, LabelIssue | None]:
    """Map a raw class to a label; (None, None) = deliberately skipped, (None, issue) = unknown."""
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
    for iss in data.issues[:20]:
        log.warning("skipped: %s: %s", iss.path, iss.message)
    if len(data.issues) > 20:
        log.warning("... and %d more skipped items", len(data.issues) - 20)
    if not data.points and not data.crops:
        raise MorphError(
            "empty_dataset",
            f"no usable labelled cells found ({len(data.issues)} item(s) skipped)",
            path=str(base),
            detail=[f"{i.path}: {i.message}" for i in data.issues[:10]],
        )
    return data


@dataclass(frozen=True)
class BoxField:
    """One field's ground-truth boxes: the image and, per source label (``rbc``, ``wbc``),
    an ``(n, 4)`` float array of x0, y0, x1, y1 in pixels."""

    number: int
    image_path: str
    boxes: dict[str, np.ndarray]


def chula_field_points(label_path: str | os.PathLike[str]) -> np.ndarray:
    """One Chula label file (``x y class`` per line) as ``(n, 3)`` rows; a missing file means no
    points. Malformed lines raise ``MorphError`` naming the file and line
    (:func:`read_chula_points` reads whole data sets and lists them instead)."""
    path = Path(label_path)
    rows: list[tuple[float, ...]] = []
    if path.is_file():
        issues: list[LabelIssue] = []
        rows = [tuple(values) for _, values in _label_records(path, 3, "x y class", issues)]
        if issues:
            raise MorphError("bad_label_file", issues[0].message, path=issues[0].path)
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def yolo_field_boxes(label_path: str | os.PathLike[str], width: int, height: int) -> dict[int, np.ndarray]:
    """One YOLO label file (``class cx cy w h`` per line, normalised to 0..1) as pixel boxes
    ``(m, 4)`` (x0, y0, x1, y1) per class number, for an image of ``width`` x ``height``.
    A row repeated exactly counts once (an annotation error: two TXL-PBC test files repeat every
    box), and a missing file means no boxes. Malformed lines raise ``MorphError`` naming the
    file and line (:func:`read_yolo_boxes` reads whole data sets and lists them instead)."""
    path = Path(label_path)
    rows: dict[tuple[float, ...], None] = {}
    if path.is_file():
        issues: list[LabelIssue] = []
        for _, values in _label_records(path, 5, "class cx cy w h", issues):
            rows[tuple(values)] = None
        if issues:
            raise MorphError("bad_label_file", issues[0].message, path=issues[0].path)  # path: file:line
    out: dict[int, list[tuple[float, float, float, float]]] = {}
    for c, cx, cy, bw, bh in rows:
        out.setdefault(int(c), []).append(((cx - bw / 2) * width, (cy - bh / 2) * height,
                                           (cx + bw / 2) * width, (cy + bh / 2) * height))
    return {k: np.array(v, dtype=np.float64).reshape(-1, 4) for k, v in out.items()}


def read_bcd256_boxes(root: str | os.PathLike[str], labels: tuple[str, ...] = ("rbc", "wbc")
                      ) -> tuple[list[BoxField], list[LabelIssue]]:
    """bcd-256 (``annotations.csv``: ``image_id,image,xmin,ymin,xmax,ymax,label``, corners
    normalised to 0..1; ``images/image-<n>.png``): the fields in number order, each with its
    boxes in pixels per label of ``labels``. Fields whose image is missing or unreadable and
    malformed rows are skipped and listed as issues. Which fields are held out for testing is
    :func:`morph.evaluation.bcd256_is_test`'s to say."""
    base = Path(root)
    ann = base / "annotations.csv"
    if not ann.is_file():
        raise MorphError("empty_dataset", "expected annotations.csv (bcd-256 layout)", path=str(base))
    rows: dict[int, dict[str, list[tuple[float, ...]]]] = {}
    issues: list[LabelIssue] = []
    with open(ann, newline="") as fh:
        for line, r in enumerate(csv.DictReader(fh), start=2):
            try:
                num, box = int(r["image_id"]), tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (KeyError, TypeError, ValueError):
                issues.append(LabelIssue(f"{ann}:{line}", "malformed row (image_id, xmin, ymin, xmax, ymax expected)"))
                continue
            lab = rows.setdefault(num, {k: [] for k in labels})
            if r.get("label") in lab:
                lab[str(r["label"])].append(box)
    out: list[BoxField] = []
    for num in sorted(rows):
        img = base / "images" / f"image-{num}.png"
        size = _image_size(img) if img.is_file() else None
        if size is None:
            issues.append(LabelIssue(str(img), "image missing or unreadable; its boxes are skipped"))
            continue
        scale = np.array(size * 2, dtype=np.float64)
        out.append(BoxField(num, str(img), {k: np.array(v, dtype=np.float64).reshape(-1, 4) * scale
                                            for k, v in rows[num].items()}))
    return out, issues
