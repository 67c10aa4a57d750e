"""STS filter (PAPER.md step 3, captioning): cosine similarity of the raw annotation and the
rewrite with a sentence-transformers model; reject below the threshold (`paper`: 0.40)."""

from typing import Any

from pf1m.filters.base import Filter, Histogram, Row
from pf1m.schemas.reasons import Reason


class Sts(Filter):
    name = "sts"
    reads = ("original", "rewrite_raw")
    writes = ("sts",)
    phase = 0
    reasons = (Reason.STS_BELOW_THRESHOLD, Reason.STS_TOO_LONG)
    not_scorable = frozenset({Reason.STS_TOO_LONG})
    scorer = "pf1m.models.scorers.sts:StsScorer"
    scoring_settings = ("model", "trust_remote_code")
    histograms = (
        Histogram(
            "STS cosine (raw vs rewrite)",
            lambda r: [r["sts"]] if r["sts"] is not None else [],
            lambda s: s.threshold,
        ),
    )

    def request(self, row: Row, settings: Any) -> tuple[str, str]:
        return row["original"] or "", row["rewrite_raw"] or ""

    def decide(self, row: Row, settings: Any) -> list[str]:
        if row["sts"] is not None and row["sts"] < settings.threshold:
            return [Reason.STS_BELOW_THRESHOLD]
        return []
