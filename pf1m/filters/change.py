"""Change filter (PAPER.md step 2): the rewrite must differ from the raw annotation."""

import unicodedata
from typing import Any

from pf1m.filters.base import Filter, Row
from pf1m.schemas.reasons import Reason


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(kept.split())


class Change(Filter):
    name = "change"
    reads = ("rewrite_raw", "original")
    reasons = (Reason.CHANGE_UNCHANGED,)

    def decide(self, row: Row, settings: Any) -> list[str]:
        if normalize(row["rewrite_raw"] or "") == normalize(row["original"] or ""):
            return [Reason.CHANGE_UNCHANGED]
        return []
