"""Change filter (PAPER.md step 2): the rewrite must differ from the raw annotation."""

import unicodedata
from collections.abc import Mapping
from typing import Any

from pf1m.schemas.config import Filters
from pf1m.schemas.reasons import Reason

NAME = "change"


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed."""
    kept = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join(kept.split())


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    if normalize(row["rewrite_raw"] or "") == normalize(row["original"] or ""):
        return [Reason.CHANGE_UNCHANGED]
    return []
