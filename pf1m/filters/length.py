"""Length filter (PAPER.md step 1): empty, too short, too long, or never produced EOS.

An empty answer is its own reason (not `too_short`), so audits can tell a rewriter that
said nothing from one that said too little."""

from typing import Any

from pf1m.filters.base import Filter, Row
from pf1m.schemas.reasons import Reason


class Length(Filter):
    name = "length"
    reads = ("rewrite_raw", "finish_reason")
    reasons = (
        Reason.LENGTH_NO_EOS,
        Reason.LENGTH_EMPTY,
        Reason.LENGTH_TOO_SHORT,
        Reason.LENGTH_TOO_LONG,
    )

    def decide(self, row: Row, settings: Any) -> list[str]:
        reasons: list[str] = []
        if settings.reject_no_eos and row["finish_reason"] == "length":
            reasons.append(Reason.LENGTH_NO_EOS)
        words = len((row["rewrite_raw"] or "").split())
        if words == 0:
            reasons.append(Reason.LENGTH_EMPTY)
        elif words < settings.min_words:
            reasons.append(Reason.LENGTH_TOO_SHORT)
        elif words > settings.max_words:
            reasons.append(Reason.LENGTH_TOO_LONG)
        return reasons
