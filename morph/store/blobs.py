"""Content-addressed image files of the case store: ``images/ab/<sha256><suffix>``.

The same upload stored twice is one file. Files and folders get the permissions the
process's umask allows (0644/0755 under umask 022, 0640/0750 under 027), so the lab's
group can read them (``morph.io``'s atomic writes give every file that mode).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..io import current_umask, write_bytes_atomic

IMAGES_DIR = "images"


#: Leading bytes of the formats the image reader takes, and the suffix a stored file gets.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"), (b"BM", ".bmp"),
)


def make_group_readable(path: Path) -> None:
    """Give a file written through a private temporary file the permissions the umask allows."""
    os.chmod(path, 0o666 & ~current_umask())


def content_name(data: bytes) -> str:
    """``<sha256><suffix>``, the suffix from the bytes' format (the upload's name may lie)."""
    digest = hashlib.sha256(data).hexdigest()
    suffix = next((suf for magic, suf in _MAGIC if data.startswith(magic)), ".img")
    return f"{digest}{suffix}"


def blob_name(data: bytes) -> str:
    """``images/ab/<sha256><suffix>``: :func:`content_name` in a folder of its first two digits."""
    name = content_name(data)
    return f"{IMAGES_DIR}/{name[:2]}/{name}"


def save_by_content(folder: Path, data: bytes) -> Path:
    """Write ``data`` to ``folder/<sha256><suffix>`` (once): two uploads never overwrite each
    other whatever they were called, and no client-given name reaches the file system."""
    path = folder / content_name(data)
    if not path.is_file():
        write_bytes_atomic(path, data)
    return path


def put_blob(store_dir: Path, data: bytes) -> tuple[str, str]:
    """Store ``data`` once; returns its name (relative to ``store_dir``) and sha256."""
    name = blob_name(data)
    path = store_dir / name
    if not path.is_file():
        path.parent.mkdir(mode=0o777, parents=True, exist_ok=True)  # umask applies: 0755/0750
        write_bytes_atomic(path, data)
        make_group_readable(path)
    return name, name.rsplit("/", 1)[1].split(".", 1)[0]
