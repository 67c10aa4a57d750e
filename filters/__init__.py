"""Filters: each module scores (if it needs a model) and decides with a pure function.

Rule filters (`length`, `change`) decide from a row's own fields. Model filters (`sts`, `nli`,
`clip_paragraph`, `reward`) also expose `request(row, filters)` (what their scorer reads),
`record(row, value)` (store the score) and a `Scorer` class (loads the model, scores batches).
Decisions never load a model, so a run can be re-decided from stored scores.
"""

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from filters import change, clip_paragraph, length, nli, reward, sts
from schemas.config import Filters

Row = Mapping[str, Any]

RULES: dict[str, Callable[[Row, Filters], list[str]]] = {
    length.NAME: length.decide,
    change.NAME: change.decide,
}
MODELS: dict[str, ModuleType] = {m.NAME: m for m in (sts, nli, clip_paragraph, reward)}

# Scoring happens in two phases: the first reads `rewrite_raw`; the reward reads `output`,
# which exists only once the CLIP paragraph decision has removed paragraphs.
PHASES: tuple[tuple[str, ...], ...] = ((sts.NAME, nli.NAME, clip_paragraph.NAME), (reward.NAME,))


def decide_rules(row: Row, filters: Filters) -> list[str]:
    reasons: list[str] = []
    for name in filters.tasks[row["task"]]:
        if name in RULES:
            reasons += RULES[name](row, filters)
    return reasons


def model_filters_for(task: str, filters: Filters) -> list[str]:
    return [name for name in filters.tasks[task] if name in MODELS]


def decide_models(row: Row, filters: Filters) -> list[str]:
    """Reasons from the stored scores of the task's model filters (null scores decide nothing)."""
    reasons: list[str] = []
    for name in model_filters_for(row["task"], filters):
        reasons += MODELS[name].decide(row, filters)
    return reasons
