"""One error type for the whole library, with a stable machine-readable code.

Callers (CLI, service, batch engine) turn a :class:`MorphError` into a message a
person can act on: the file it concerns, what is wrong and, where useful, a detail.
Codes are part of the public contract (the service returns them, batch runs write
them to ``errors.csv``); add new ones, never rename existing ones.
"""

from __future__ import annotations

from typing import Any

#: Every code the library raises, with a one-line meaning.
ERROR_CODES: dict[str, str] = {
    "file_not_found": "the path does not exist",
    "unreadable_file": "the file exists but cannot be read (permissions, a folder, an I/O error)",
    "empty_file": "the file has zero bytes",
    "not_an_image": "the bytes are not an image format we read",
    "truncated_image": "the image data ends early or is corrupt",
    "image_too_large": "more pixels than the configured limit (decompression-bomb guard)",
    "image_too_small": "too few pixels to hold a single cell",
    "unsupported_image": "an image mode or layout we cannot convert to RGB",
    "bad_label_file": "a label/annotation file is malformed",
    "bad_label": "a label value is unknown or out of range",
    "bad_config": "a configuration file or value is invalid",
    "bad_context": "a clinical-context field is unknown, of the wrong type or impossible",
    "bad_request": "the input to a library call is invalid",
    "empty_dataset": "a data folder holds no usable examples",
    "model_not_found": "no model folder or registered architecture of that name",
    "bad_model": "a model folder is incomplete or inconsistent",
    "symlink_loop": "a symbolic link loops, or leads back into a folder already walked (not followed)",
    "not_found": "no stored case (or cell of a case) with that id",
    "store_disabled": "the case store is not enabled (MORPH_STORE_DIR is not set)",
    "analysis_failed": "scoring a case failed unexpectedly (a worker died or a bug); it is retried on the next run",
}


class MorphError(Exception):
    """The library's single error type.

    Args:
        code: stable machine-readable code, one of :data:`ERROR_CODES`.
        message: a sentence a person can act on.
        path: the file (or field name) the error concerns, if any.
        detail: extra machine-readable detail (JSON-serialisable).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        path: str | None = None,
        detail: Any = None,
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown MorphError code {code!r}")
        self.code = code
        self.message = message
        self.path = path
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{where}{self.message} [{self.code}]"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.path is not None:
            out["path"] = self.path
        if self.detail is not None:
            out["detail"] = self.detail
        return out
