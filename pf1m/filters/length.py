"""Length filter (PAPER.md step 1): empty, too short, too long, or never produced EOS.

An empty answer is its own reason (not `too_short`), so audits can tell a rewriter that
said nothing from one that said too little."""

from collections.abc import Mapping
from typing import Any

from pf1m.schemas.config import Filters
from pf1m.schemas.reasons import Reason

NAME = "length"


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    cfg = filters.length
    reasons: list[str] = []
    if cfg.reject_no_eos and row["finish_reason"] == "length":
        reasons.append(Reason.LENGTH_NO_EOS)
    words = len((row["rewrite_raw"] or "").split())
    if words == 0:
        reasons.append(Reason.LENGTH_EMPTY)
    elif words < cfg.min_words:
        reasons.append(Reason.LENGTH_TOO_SHORT)
    elif words > cfg.max_words:
        reasons.append(Reason.LENGTH_TOO_LONG)
    return reasons
