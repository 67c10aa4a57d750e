"""What every format reader shares: keys sanitised to `[A-Za-z0-9_-]`, streamed JSON (ijson,
so a 450 MB annotation file is never loaded whole), the image-path pattern of the VQA sets, and
the error a source file that is not what its format says raises."""

import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson

from pf1m.schemas.config import ConfigError

_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_-]")


class SourceError(ValueError):
    """A source file that cannot be read as its format says (names the file and the reason)."""


def sanitize_key(raw: Any) -> str:
    """The source's id as a WebDataset key: every other character becomes `_` (a dot would
    split the key, a slash would make a path)."""
    return _UNSAFE_KEY.sub("_", str(raw).strip())


def json_items(path: str | Path, prefix: str) -> Iterator[Any]:
    """Stream the values at `prefix` (ijson syntax: `annotations.item`), floats as float."""
    try:
        with open(path, "rb") as f:
            yield from ijson.items(f, prefix, use_float=True)
    except ijson.JSONError as exc:
        raise SourceError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None


def json_kvitems(path: str | Path, prefix: str) -> Iterator[tuple[str, Any]]:
    """Stream (key, value) of the object at `prefix` (`""`: the top-level object)."""
    try:
        with open(path, "rb") as f:
            yield from ijson.kvitems(f, prefix, use_float=True)
    except ijson.JSONError as exc:
        raise SourceError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None


def first_value(path: str | Path, prefix: str) -> Any | None:
    """The first value at `prefix`, reading no further than it."""
    items = json_items(path, prefix)
    try:
        return next(items, None)
    finally:
        items.close()


def check_pattern(pattern: str, allowed: set[str]) -> str:
    """An `--image-pattern` that names only the fields this format can fill."""
    try:
        names = {n for _, n, _, _ in string.Formatter().parse(pattern) if n is not None}
    except ValueError as exc:
        raise ConfigError(f"--image-pattern {pattern!r}: {exc}") from None
    if not names or names - allowed:
        raise ConfigError(
            f"--image-pattern {pattern!r}: use only the placeholders {sorted(allowed)} "
            "(e.g. {image_id:012d})"
        )
    return pattern


def text(value: Any) -> str:
    """A source field as stripped text; None and non-strings become ''."""
    return value.strip() if isinstance(value, str) else ""
