"""Finding the cases under an input folder, and the clinical context of each from a CSV."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import MorphError
from ..io import IMAGE_SUFFIXES, read_csv_rows, read_image
from .options import CASE_MODES, CaseSpec, Discovery, ImageInput, InputError


def join_rel(root: str, rel: str) -> str:
    """INPUT_DIR joined with a POSIX relative path, as reports and CSVs name the file."""
    return os.path.join(root, *rel.split("/")) if rel else root


def discover_cases(
    input_dir: str | os.PathLike[str],
    case_mode: str = "subfolder",
    exclude: Sequence[str | os.PathLike[str]] = (),
) -> Discovery:
    """Walk ``input_dir`` and group its images into cases (sorted, deterministic).

    Symbolic links are followed, but never into a folder already walked (a loop or an
    alias of a real folder, which is walked under its own name): those are reported as
    ``symlink_loop``. Hidden entries (names starting with
    ``.``) and the paths in ``exclude`` (the output folder, the context file) are ignored.
    Every other file that is not an image, and every folder that cannot be listed, is
    reported as an :class:`InputError`. Empty folders are not cases and not errors,
    except a folder named like an image file (``x.png/``) that holds no image.
    """
    if case_mode not in CASE_MODES:
        raise MorphError("bad_request", f"unknown case mode {case_mode!r}", path="case_mode")
    root = Path(input_dir)
    if not root.exists():
        raise MorphError("file_not_found", "the input folder does not exist", path=str(input_dir))
    if not root.is_dir():
        raise MorphError("bad_request", "the input must be a folder of cases", path=str(input_dir))
    walker = _Walker(str(input_dir), case_mode, {os.path.realpath(e) for e in exclude})
    walker.walk(str(root), "")
    walker.follow_links()
    walker.out.cases.sort(key=lambda c: c.case_id)
    return walker.out


class _Walker:
    """One discovery: the folders walked so far, the folder links put aside, what was found."""

    def __init__(self, root_s: str, case_mode: str, excluded: set[str]) -> None:
        self.root_s, self.case_mode, self.excluded = root_s, case_mode, excluded
        self.visited: dict[str, str] = {}
        self.links: list[tuple[str, str]] = []  # folder symlinks, followed after every real folder
        self.out = Discovery()

    def error(self, rel: str, code: str, message: str) -> None:
        self.out.errors.append(InputError(join_rel(self.root_s, rel), code, message))

    def walk(self, dir_path: str, rel: str) -> bool:
        """Walk one folder; True when it (or a folder under it) held an image."""
        self.visited[os.path.realpath(dir_path)] = rel
        try:
            entries = sorted(os.scandir(dir_path), key=lambda e: e.name)
        except OSError as exc:
            self.error(rel, "unreadable_file", f"cannot list the folder ({exc.strerror or exc})")
            return False
        images: list[ImageInput] = []
        subdirs: list[tuple[str, str]] = []
        for e in entries:
            if not e.name.startswith("."):
                self._entry(e, f"{rel}/{e.name}" if rel else e.name, images, subdirs)
        if self.case_mode == "image" or not rel:
            self.out.cases.extend(CaseSpec(im.rel, [im]) for im in images)
        elif images:
            self.out.cases.append(CaseSpec(rel, images))
        found = bool(images)
        for path, sub_rel in subdirs:
            found = self.walk(path, sub_rel) or found
        if rel and not found and os.path.splitext(rel)[1].lower() in IMAGE_SUFFIXES:
            try:  # read_image says what is wrong with an "image" that is a folder
                read_image(dir_path)
            except MorphError as exc:
                self.out.errors.append(InputError.from_exc(exc, join_rel(self.root_s, rel)))
        return found

    def _entry(self, e: os.DirEntry[str], rel: str, images: list[ImageInput],
               subdirs: list[tuple[str, str]]) -> None:
        """Sort one folder entry: an image, a folder (or folder link) to walk, or an error row."""
        try:
            st = os.stat(e.path)  # follows links
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self.error(rel, "symlink_loop", "symbolic link loop: the link never reaches a file or folder")
            elif e.is_symlink():
                self.error(rel, "file_not_found", "broken symbolic link: its target does not exist")
            else:
                self.error(rel, "unreadable_file", f"cannot read the file ({exc.strerror or exc})")
            return
        if os.path.realpath(e.path) in self.excluded:
            return
        if stat.S_ISDIR(st.st_mode):
            (self.links if e.is_symlink() else subdirs).append((e.path, rel))
        elif not stat.S_ISREG(st.st_mode):
            self.error(rel, "unreadable_file", "not a regular file (a pipe, socket or device); not scored")
        elif (suffix := os.path.splitext(e.name)[1].lower()) in IMAGE_SUFFIXES:
            images.append(ImageInput(rel, join_rel(self.root_s, rel)))
        else:
            self.error(rel, "not_an_image", f"not an image file (suffix {suffix or 'none'!r}; images end in "
                       f"{', '.join(IMAGE_SUFFIXES)}); not scored")

    def follow_links(self) -> None:
        """Walk a linked folder only when no real folder (or earlier link) was that folder."""
        while self.links:
            self.links.sort(key=lambda t: t[1])
            path, rel = self.links.pop(0)
            real = os.path.realpath(path)
            if real in self.visited:
                seen = join_rel(self.root_s, self.visited[real]) if self.visited[real] else self.root_s
                self.error(rel, "symlink_loop", f"links to a folder already walked ({seen}); "
                           "not followed, to avoid a loop or scoring the same images twice")
                continue
            self.walk(path, rel)


# ------------------------------------------------------------------------------------------
# clinical context from a CSV
# ------------------------------------------------------------------------------------------
def load_context_csv(path: str | os.PathLike[str]) -> dict[str, dict[str, Any] | MorphError]:
    """Read a context CSV: one row per case (column ``case``), the other columns context fields.

    Returns ``{case_id: validated context dict | MorphError}``: a bad row is an error for
    that case only. Empty cells mean "not given". A file without a ``case`` column is a
    usage error (raised).
    """
    from ..context import context_from_text

    name = str(path)
    header, rows = read_csv_rows(path)
    key = next((k for k in ("case", "case_id") if k in header), None)
    if key is None:
        raise MorphError("bad_context", f"the context file needs a 'case' column (has: {', '.join(header)})",
                         path=name)
    out: dict[str, dict[str, Any] | MorphError] = {}
    for line, row in rows:
        case_id = row.pop(key).strip().strip("/")
        if not case_id:
            raise MorphError("bad_context", f"line {line} has no case id", path=name)
        if case_id in out:
            out[case_id] = MorphError("bad_context", f"line {line}: a second row for case {case_id!r}", path=name)
            continue
        try:
            out[case_id] = context_from_text(row)
        except MorphError as exc:
            field_s = f" (column {exc.path})" if exc.path else ""
            out[case_id] = MorphError("bad_context", f"line {line}, case {case_id!r}: {exc.message}{field_s}",
                                      path=name)
    return out
