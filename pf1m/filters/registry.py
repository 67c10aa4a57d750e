"""The one list of filters. The config's allowed names, the scoring phases, the report's
sections and the benchmarks' lists derive from it. Adding a filter is one module plus one line
here; a filter of your own is named by import path in the config's `filters.plugins` (a rule
filter: a model filter's score needs its own column in pf1m/schemas/rows.py).

Only names and import paths live here, so `pf1m.schemas.config` can check names without
importing filter code."""

from collections.abc import Sequence
from functools import cache

BUILTIN: dict[str, str] = {
    "length": "pf1m.filters.length:Length",
    "change": "pf1m.filters.change:Change",
    "sts": "pf1m.filters.sts:Sts",
    "nli": "pf1m.filters.nli:Nli",
    "clip_paragraph": "pf1m.filters.clip_paragraph:ClipParagraph",
    "reward": "pf1m.filters.reward:Reward",
}


@cache
def _load(plugins: tuple[str, ...]) -> dict:
    from pf1m.filters.base import Filter, import_object

    found = {}
    for path in (*BUILTIN.values(), *plugins):
        try:
            cls = import_object(path)
        except Exception as exc:  # a plugin's own import error, whatever it is, named
            msg = f"filter {path}: cannot import it ({type(exc).__name__}: {exc})"
            raise ValueError(msg) from None
        if not (isinstance(cls, type) and issubclass(cls, Filter)):
            raise ValueError(f"filter {path}: not a pf1m.filters.base.Filter subclass")
        if cls.name in found:
            raise ValueError(f"filter {path}: the name {cls.name!r} is taken")
        if path not in BUILTIN.values() and cls.phase is not None:
            raise ValueError(
                f"filter {path}: a plugin must be a rule filter (phase None); a model filter's "
                "score needs a column of its own in the output schema, so it belongs in pf1m"
            )
        try:
            found[cls.name] = cls()
        except Exception as exc:
            msg = f"filter {path}: cannot create it ({type(exc).__name__}: {exc})"
            raise ValueError(msg) from None
    return found


def load(plugins: Sequence[str] = ()) -> dict:
    """Name -> Filter instance: the built-in filters, then the plugins, in this order."""
    return _load(tuple(plugins))


def model_filters(plugins: Sequence[str] = ()) -> list:
    """The filters that score with a model, in scoring order (phase, then registry order)."""
    scored = [f for f in load(plugins).values() if f.phase is not None]
    return sorted(scored, key=lambda f: f.phase)


def phases(plugins: Sequence[str] = ()) -> list[list]:
    """Model filters grouped by phase, in order."""
    grouped: dict[int, list] = {}
    for f in model_filters(plugins):
        grouped.setdefault(f.phase, []).append(f)
    return [grouped[p] for p in sorted(grouped)]
