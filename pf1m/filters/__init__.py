"""Filters: each module scores (if it needs a model) and decides with a pure function.

Rule filters (`length`, `change`) decide from a row's own fields. Model filters (`sts`, `nli`,
`clip_paragraph`, `reward`) also expose `request(row, filters)` (what their scorer reads),
`record(row, value)` (store the score) and a `Scorer` class (loads the model, scores batches).
Decisions never load a model, so a run can be re-decided from stored scores.
"""

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from pf1m.filters import change, clip_paragraph, length, nli, reward, sts
from pf1m.filters.rouge import rouge_l
from pf1m.schemas.config import Filters
from pf1m.schemas.reasons import Reason

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


def redecide(row: Row, filters: Filters) -> tuple[dict[str, Any], bool]:
    """A stored row decided again under `filters` from its stored scores, as the pipeline would
    have decided it (no model). A decision that needs a score never computed gets
    `FILTER:unscored`. Returns the row and whether its reward was computed on an `output` that
    has now changed (a new CLIP threshold rebuilt it)."""
    new = dict(row)
    new["output"] = row["rewrite_raw"]
    reasons = decide_rules(new, filters)
    wanted = model_filters_for(row["task"], filters)
    if wanted and (filters.scoring == "full" or not reasons):
        if clip_paragraph.NAME in wanted and row["paragraphs"] is not None:
            clip_paragraph.apply(new, filters)
        given = set(row["reject_reasons"] or [])
        for name in wanted:
            module = MODELS[name]
            if given & module.NOT_SCORABLE:
                reasons += sorted(given & module.NOT_SCORABLE)
            elif new[module.SCORE_FIELD] is None:
                reasons.append(Reason.unscored(name))
            else:
                reasons += module.decide(new, filters)
    new["rouge_l"] = rouge_l(new["output"] or "", new["original"] or "")
    new["reject_reasons"] = [str(r) for r in dict.fromkeys(reasons)]
    new["kept"] = not new["reject_reasons"]
    stale = row["reward"] is not None and new["output"] != row["output"]
    return new, stale
