"""Filters: each module scores (if it needs a model) and decides with a pure function.

Rule filters decide from a row's own fields. `decide_rules` applies the task's configured
filters in order and returns reason codes; an empty list means keep.
"""

from collections.abc import Callable, Mapping
from typing import Any

from filters import change, length
from schemas.config import Filters

Row = Mapping[str, Any]

RULES: dict[str, Callable[[Row, Filters], list[str]]] = {
    length.NAME: length.decide,
    change.NAME: change.decide,
}


def decide_rules(row: Row, filters: Filters) -> list[str]:
    reasons: list[str] = []
    for name in filters.tasks[row["task"]]:
        reasons += RULES[name](row, filters)
    return reasons
