"""Label readers: Chula points, YOLO boxes, Pascal VOC, CSV points, class folders; bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from morph.errors import MorphError
from morph.io import write_image
from morph.readers import read_bcd256_boxes, read_label_mapping, read_labelled_data


def _img(path: Path, w: int = 120, h: int = 100) -> Path:
    arr = np.full((h, w, 3), 220, np.uint8)
    arr[30:60, 30:60] = (200, 100, 120)
    write_image(path, arr)
    return path


def _chula(tmp: Path) -> Path:
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    _img(tmp / "images" / "1.jpg")
    _img(tmp / "images" / "2.jpg")
    (tmp / "labels" / "1.txt").write_text("45 45 0\n80 50 7\n")
    (tmp / "labels" / "2.txt").write_text("10 10 12\n500 20 0\n30 30 99\nnot a line\n")
    return tmp


def test_chula_points_and_bad_lines(tmp_path: Path) -> None:
    d = read_labelled_data(_chula(tmp_path), "chula")
    assert [p.label for p in d.points] == ["normal", "teardrop", "elliptocyte"]
    assert d.points[1].source_line.endswith("1.txt:2")
    assert (d.points[0].x, d.points[0].y) == (45.0, 45.0)
    msgs = " | ".join(f"{i.path}: {i.message}" for i in d.issues)
    assert "outside its 120x100 image" in msgs and "2.txt:2" in msgs
    assert "unknown class '99'" in msgs and "2.txt:3" in msgs
    assert "expected 'x y class'" in msgs
    assert len(d.issues) == 3


def test_chula_with_mapping_file(tmp_path: Path) -> None:
    root = _chula(tmp_path / "c")
    m = tmp_path / "map.yaml"
    m.write_text("classes:\n  0: normal\n  7: null\n  12: elliptocyte\n  99: other_wbc\n")
    d = read_labelled_data(root, "chula", m)
    assert sorted(p.label for p in d.points) == ["elliptocyte", "normal", "other_wbc"]


def test_bad_mapping_target(tmp_path: Path) -> None:
    m = tmp_path / "map.yaml"
    m.write_text("classes:\n  0: not_a_label\n")
    with pytest.raises(MorphError) as ei:
        read_label_mapping(m)
    assert ei.value.code == "bad_config" and "not_a_label" in ei.value.message


def test_corrupt_image_named(tmp_path: Path) -> None:
    root = _chula(tmp_path)
    (root / "images" / "2.jpg").write_bytes(b"this is not a jpeg")
    d = read_labelled_data(root, "chula")
    assert all(Path(p.image_path).name == "1.jpg" for p in d.points)
    assert any("2.jpg" in i.path and "cannot be opened" in i.message for i in d.issues)


def test_empty_folder_is_clear(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(MorphError) as ei:
        read_labelled_data(tmp_path, "chula")
    assert ei.value.code == "empty_dataset" and ei.value.path == str(tmp_path)
    with pytest.raises(MorphError) as ei:
        read_labelled_data(tmp_path / "nope", "chula")
    assert ei.value.code == "file_not_found"
    with pytest.raises(MorphError):
        read_labelled_data(tmp_path, "unknown-format")


def test_yolo_boxes(tmp_path: Path) -> None:
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "labels" / "val").mkdir(parents=True)
    _img(tmp_path / "images" / "val" / "a.jpg", 100, 100)
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n5 0.5 0.5 0.1 0.1\n0 1.5 0.5 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text("names: ['WBC', 'RBC', 'Platelets']\n")
    m = tmp_path / "m.yaml"
    m.write_text("classes:\n  0: other_wbc\n  1: null\n  2: platelet\n")
    d = read_labelled_data(tmp_path, "yolo", m, split="val")
    assert [p.label for p in d.points] == ["other_wbc"]
    assert d.points[0].x == pytest.approx(50) and d.points[0].bbox == pytest.approx((40, 40, 60, 60))
    msgs = [i.message for i in d.issues]
    assert any("unknown class '5'" in s for s in msgs)
    assert any("outside its image" in s for s in msgs)


def test_unreadable_label_file_and_odd_classes_are_issues_not_crashes(tmp_path: Path) -> None:
    # the same line handling serves the Chula and YOLO readers
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    _img(tmp_path / "images" / "a.jpg", 100, 100)
    _img(tmp_path / "images" / "b.jpg", 100, 100)
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\ninf 0.5 0.5 0.1 0.1\n1.5 0.2 0.2 0.1 0.1\n")
    (tmp_path / "labels" / "b.txt").write_bytes(b"\xff\xfe not utf-8")
    m = tmp_path / "m.yaml"
    m.write_text("classes:\n  0: other_wbc\n  1: null\n")
    d = read_labelled_data(tmp_path, "yolo", m)
    assert [p.label for p in d.points] == ["other_wbc"]
    msgs = " | ".join(f"{i.path}: {i.message}" for i in d.issues)
    assert "a.txt:2: class inf is not a whole number" in msgs
    assert "b.txt: cannot read" in msgs


def test_voc(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    _img(tmp_path / "JPEGImages" / "f.png")
    (tmp_path / "Annotations" / "f.xml").write_text(
        "<annotation><filename>f.png</filename>"
        "<object><name>teardrop</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"
        "<object><name>alien</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>normal</name><bndbox><xmin>300</xmin><ymin>10</ymin><xmax>330</xmax><ymax>40</ymax></bndbox></object>"
        "</annotation>"
    )
    (tmp_path / "Annotations" / "broken.xml").write_text("<annotation><object>")
    d = read_labelled_data(tmp_path, "voc")
    assert [(p.label, p.x, p.y) for p in d.points] == [("teardrop", 20.0, 25.0)]
    msgs = " ".join(f"{i.path} {i.message}" for i in d.issues)
    assert "alien" in msgs and "outside" in msgs and "broken.xml" in msgs


def test_csv_points(tmp_path: Path) -> None:
    _img(tmp_path / "a.png")
    (tmp_path / "cells.csv").write_text("image,x,y,label\na.png,40,40,spherocyte\na.png,x,1,normal\nmissing.png,1,1,normal\na.png,5,5,bogus\n")
    d = read_labelled_data(tmp_path / "cells.csv", "csv")
    assert [p.label for p in d.points] == ["spherocyte"]
    assert len(d.issues) == 3
    (tmp_path / "bad.csv").write_text("file,x\n")
    with pytest.raises(MorphError) as ei:
        read_labelled_data(tmp_path / "bad.csv", "csv")
    assert ei.value.code == "bad_label_file"


def test_class_folders(tmp_path: Path) -> None:
    for lab in ("normal", "teardrop"):
        (tmp_path / lab).mkdir()
        _img(tmp_path / lab / "x1.png", 48, 48)
    (tmp_path / "mystery").mkdir()
    _img(tmp_path / "mystery" / "x.png", 48, 48)
    (tmp_path / "sickle_cell").mkdir()  # a class with no examples
    d = read_labelled_data(tmp_path, "folder")
    assert sorted(c.label for c in d.crops) == ["normal", "teardrop"]
    msgs = " ".join(i.message for i in d.issues)
    assert "mystery" in msgs and "holds no images" in msgs


def test_real_chula_reader(chula_dir: Path) -> None:
    d = read_labelled_data(chula_dir, "chula")
    assert len(d.points) > 18000 and not d.issues
    assert {p.label for p in d.points} >= {"normal", "teardrop", "uncategorised"}


def test_bcd256_boxes_in_pixels_bad_rows_and_missing_images(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    _img(tmp_path / "images" / "image-1.png", w=200, h=100)
    (tmp_path / "annotations.csv").write_text(
        "image_id,image,xmin,ymin,xmax,ymax,label\n"
        "1,image-1.png,0.1,0.2,0.3,0.6,rbc\n"
        "1,image-1.png,0.5,0.5,0.9,0.9,wbc\n"
        "1,image-1.png,0.5,oops,0.9,0.9,rbc\n"
        "2,image-2.png,0.1,0.1,0.2,0.2,rbc\n"
    )
    fields, issues = read_bcd256_boxes(tmp_path)
    assert [f.number for f in fields] == [1]
    assert fields[0].boxes["rbc"].tolist() == [[20.0, 20.0, 60.0, 60.0]]
    assert fields[0].boxes["wbc"].tolist() == [[100.0, 50.0, 180.0, 90.0]]
    assert len(issues) == 2 and "image-2.png" in issues[1].path and ":4" in issues[0].path
    with pytest.raises(MorphError, match="annotations.csv"):
        read_bcd256_boxes(tmp_path / "images")


def test_real_bcd256_reader(bcd_dir: Path) -> None:
    fields, issues = read_bcd256_boxes(bcd_dir)
    assert len(fields) == 60 and not issues
    assert 1250 < sum(len(f.boxes["rbc"]) for f in fields) < 1400


def test_yolo_field_boxes_in_pixels_duplicates_once(tmp_path: Path) -> None:
    """One YOLO label file as pixel corners per class; an exactly repeated row is one box, a
    missing file no boxes, a malformed line an error naming file and line."""
    from morph.readers import yolo_field_boxes

    f = tmp_path / "a.txt"
    f.write_text("1 0.5 0.5 0.2 0.4\n1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.1 0.1\n")
    boxes = yolo_field_boxes(f, width=200, height=100)
    np.testing.assert_allclose(boxes[1], [[80.0, 30.0, 120.0, 70.0]])
    np.testing.assert_allclose(boxes[0], [[10.0, 15.0, 30.0, 25.0]])
    assert yolo_field_boxes(tmp_path / "missing.txt", 10, 10) == {}
    f.write_text("1 0.5 0.5 0.2\n")
    with pytest.raises(MorphError, match="a.txt:1"):
        yolo_field_boxes(f, 10, 10)


def test_chula_field_points_as_rows(tmp_path: Path) -> None:
    """One Chula label file as (x, y, class) rows; a missing file no points, a malformed line
    an error naming file and line."""
    from morph.readers import chula_field_points

    f = tmp_path / "7.txt"
    f.write_text("10 20 0\n\n30.5 40 11\n")
    np.testing.assert_array_equal(chula_field_points(f), [[10, 20, 0], [30.5, 40, 11]])
    assert chula_field_points(tmp_path / "missing.txt").shape == (0, 3)
    f.write_text("10 20\n")
    with pytest.raises(MorphError, match="7.txt:1"):
        chula_field_points(f)
