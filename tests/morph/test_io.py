"""Image input: every format we accept, every bad file we must reject with a clear, coded error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from morph.errors import MorphError
from morph.io import (
    ImageLimits,
    decode_image,
    read_image,
    read_json,
    write_bytes_atomic,
    write_json,
)


def _rgb(h: int = 60, w: int = 80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("TIFF", ".tif"), ("BMP", ".bmp")])
def test_reads_common_formats_as_rgb_uint8(tmp_path: Path, fmt: str, suffix: str) -> None:
    arr = _rgb()
    p = _save(Image.fromarray(arr), tmp_path / f"a{suffix}", format=fmt)
    out = read_image(p)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8
    if fmt != "JPEG":
        np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "1", "CMYK"])
def test_converts_modes_to_rgb(tmp_path: Path, mode: str) -> None:
    img = Image.fromarray(_rgb()).convert(mode)
    p = _save(img, tmp_path / "m.png" if mode != "CMYK" else tmp_path / "m.jpg")
    out = read_image(p)
    assert out.shape == (60, 80, 3) and out.dtype == np.uint8


def test_rgba_transparency_becomes_white_background(tmp_path: Path) -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # fully transparent black
    p = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "t.png")
    assert (read_image(p) == 255).all()


def test_16bit_tiff_is_scaled_to_8bit(tmp_path: Path) -> None:
    arr16 = np.full((40, 50), 65535, dtype=np.uint16)
    arr16[:20] = 0
    p = _save(Image.fromarray(arr16), tmp_path / "s.tif", format="TIFF")
    out = read_image(p)
    assert out.shape == (40, 50, 3)
    assert out[:20].max() == 0 and out[20:].min() == 255


def test_multipage_tiff_reads_first_page(tmp_path: Path) -> None:
    pages = [Image.fromarray(np.full((40, 40, 3), v, np.uint8)) for v in (10, 200)]
    p = tmp_path / "multi.tif"
    pages[0].save(p, save_all=True, append_images=pages[1:])
    assert read_image(p).mean() == pytest.approx(10, abs=1)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.fromarray(_rgb(40, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "o.jpg"
    img.save(p, exif=exif.tobytes())
    assert read_image(p).shape == (80, 40, 3)


def _code(fn, *a, **kw) -> MorphError:
    with pytest.raises(MorphError) as ei:
        fn(*a, **kw)
    return ei.value


def test_missing_file(tmp_path: Path) -> None:
    e = _code(read_image, tmp_path / "nope.jpg")
    assert e.code == "file_not_found" and "nope.jpg" in str(e)


def test_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    e = _code(read_image, p)
    assert e.code == "empty_file" and e.path == str(p)


def test_text_file_renamed_jpg(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("patient list, not an image\n")
    e = _code(read_image, p)
    assert e.code == "not_an_image" and "notes.jpg" in str(e)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(_rgb(200, 200)).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    e = _code(read_image, p)
    assert e.code == "truncated_image" and "cut." in str(e)


def test_pixel_limit_rejects_before_decoding(tmp_path: Path) -> None:
    p = _save(Image.new("RGB", (400, 300)), tmp_path / "big.png")
    e = _code(read_image, p, ImageLimits(max_pixels=100_000))
    assert e.code == "image_too_large" and e.detail["max_pixels"] == 100_000


def test_decompression_bomb_header_only(tmp_path: Path) -> None:
    # a tiny PNG file that claims 30000x30000 pixels: must be refused from the header
    p = _save(Image.new("1", (30000, 30000)), tmp_path / "bomb.png", optimize=True)
    assert p.stat().st_size < 2_000_000
    e = _code(read_image, p)
    assert e.code == "image_too_large"


def test_too_small_to_hold_a_cell(tmp_path: Path) -> None:
    p = _save(Image.new("RGB", (10, 10)), tmp_path / "tiny.png")
    assert _code(read_image, p).code == "image_too_small"


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    d = tmp_path / "dir.jpg"
    d.mkdir()
    assert _code(read_image, d).code == "unreadable_file"


def test_decode_bytes_names_the_upload() -> None:
    e = _code(decode_image, b"GIF89a-nope", name="upload.gif")
    assert e.path == "upload.gif" and e.code in ("not_an_image", "truncated_image")


def test_error_dict_is_machine_readable(tmp_path: Path) -> None:
    p = tmp_path / "e.jpg"
    p.write_bytes(b"")
    d = _code(read_image, p).to_dict()
    assert d["code"] == "empty_file" and d["path"] == str(p) and d["message"]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    write_bytes_atomic(tmp_path / "sub" / "x.bin", b"abc")
    write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "sub" / "x.bin").read_bytes() == b"abc"
    assert read_json(tmp_path / "r.json") == {"a": 1}
    assert not [p for p in tmp_path.rglob("*.tmp")]
