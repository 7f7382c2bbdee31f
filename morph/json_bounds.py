"""Bounds on untrusted JSON text, checked before it is parsed.

``json.loads`` turns hostile but well-formed JSON into errors of the wrong kind or into
values nobody meant: a 5,000-digit integer is a ``ValueError`` (Python's 4,300-digit
limit), arrays nested 100,000 deep a ``RecursionError``, ``1e400`` and the non-standard
``NaN`` / ``Infinity`` literals become non-finite floats, and a key given twice silently
keeps its last value. :func:`find_json_hazard` scans the text once (strings skipped whole,
so nothing inside a string counts) and names the first such hazard by its path of keys
and array positions, so a caller can refuse it as bad input naming the field.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

#: Far above any real number literal (a count, a measurement) and far below what costs time.
MAX_NUMBER_CHARS = 40

_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string, escapes included (its brackets and commas do not count)
    r"|-?\d[\d.eE+\-]*"  # a number literal (checked by float() once short enough)
    r"|-?[A-Za-z_]\w*"  # a bare word: true, false, null or a non-standard literal
    r"|[\[\]{},:]"
)
_WORDS = frozenset({"true", "false", "null"})


@dataclass(frozen=True)
class JsonHazard:
    """Where the text is hostile (keys and array positions from the top) and why."""

    path: tuple[str | int, ...]
    kind: str  # too_deep | number_too_long | number_not_finite | duplicate_key
    message: str

    @property
    def where(self) -> str:
        """The path as ``counts.normal`` / ``cells.3.label`` (empty at the top level)."""
        return ".".join(str(p) for p in self.path)


class _Frame:
    """One open object or array: the key or position being read, the keys seen so far."""

    __slots__ = ("is_array", "key", "seen")

    def __init__(self, is_array: bool) -> None:
        self.is_array = is_array
        self.key: str | int | None = 0 if is_array else None
        self.seen: set[str] = set()


def _path(stack: list[_Frame]) -> tuple[str | int, ...]:
    return tuple(f.key for f in stack if f.key is not None)


def _field_path(stack: list[_Frame]) -> tuple[str | int, ...]:
    """The path down to the deepest field name: the run of array positions under it says nothing."""
    path = list(_path(stack[:-1]))
    while path and isinstance(path[-1], int):
        path.pop()
    return tuple(path)


def _key_text(token: str) -> str:
    try:
        return str(json.loads(token))
    except ValueError:
        return token.strip('"')


def _number_hazard(token: str, max_chars: int) -> tuple[str, str] | None:
    if len(token) > max_chars:
        return "number_too_long", f"a number of {len(token)} characters; at most {max_chars} are accepted"
    try:
        value = float(token)
    except ValueError:
        return None  # malformed: json.loads reports it as a syntax error
    if not math.isfinite(value):
        return "number_not_finite", f"{token} is out of range (not a finite number)"
    return None


def find_json_hazard(
    text: str, *, max_depth: int, max_number_chars: int = MAX_NUMBER_CHARS
) -> JsonHazard | None:
    """The first hostile spot of ``text`` (nesting over ``max_depth``, a number literal over
    ``max_number_chars`` or not finite, ``NaN``/``Infinity``, a key given twice), or ``None``.

    Syntax errors are left to the parser: this only finds what a parser would accept wrongly
    or fail on with the wrong error.
    """
    stack: list[_Frame] = []
    last_string = ""
    for match in _TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        if first == '"':
            last_string = token
        elif first in "[{":
            stack.append(_Frame(first == "["))
            if len(stack) > max_depth:
                return JsonHazard(_field_path(stack), "too_deep", f"nested more than {max_depth} levels deep")
        elif first in "]}":
            if stack:
                stack.pop()
        elif first == ",":
            if stack:
                top = stack[-1]
                top.key = top.key + 1 if isinstance(top.key, int) else None
        elif first == ":":
            if stack and not stack[-1].is_array:
                top = stack[-1]
                top.key = _key_text(last_string)
                if top.key in top.seen:
                    return JsonHazard(_path(stack), "duplicate_key", "given twice; give each field once")
                top.seen.add(top.key)
        elif first.isdigit() or (first == "-" and token[1:2].isdigit()):
            found = _number_hazard(token, max_number_chars)
            if found:
                return JsonHazard(_path(stack), *found)
        elif token not in _WORDS and token.lstrip("-") in ("NaN", "Infinity"):
            return JsonHazard(_path(stack), "number_not_finite", f"{token} is not a JSON number")
    return None
