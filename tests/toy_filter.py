"""A filter of a user's own, for tests: named in a config's `filters.plugins`, it must run in the
shard tasks (Ray workers import it) and in refilter exactly like a built-in one."""

from typing import Any

from pf1m.filters.base import Filter, Row

TOO_LONG = "toy_chars:too_long"


class ToyChars(Filter):
    """Rejects a rewrite of more than `max_chars` characters (settings in `filters.options`)."""

    name = "toy_chars"
    reads = ("rewrite_raw",)
    reasons = (TOO_LONG,)

    def decide(self, row: Row, settings: Any) -> list[str]:
        return [TOO_LONG] if len(row["rewrite_raw"] or "") > settings["max_chars"] else []


class ToyScored(ToyChars):
    """A plugin that asks for a model: refused (its score would have no column)."""

    name = "toy_scored"
    phase = 0


class ToyClash(ToyChars):
    """A plugin whose name is a `filters` field: refused."""

    name = "tasks"
