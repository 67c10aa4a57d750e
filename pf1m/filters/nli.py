"""NLI filter (PAPER.md step 4, VQA): a cross-encoder on the paper's premise/hypothesis strings;
reject when the argmax is contradiction. Logits are stored in the canonical order
(contradiction, entailment, neutral) whatever the model's own order (pf1m.models.scorers.nli)."""

from typing import Any

from pf1m.filters.base import Filter, Row
from pf1m.schemas.reasons import Reason
from pf1m.schemas.rows import NLI_LABELS
from pf1m.schemas.sample import IMAGE_MARKER


def question(instruction: str) -> str:
    return " ".join(instruction.replace(IMAGE_MARKER, " ").split())


class Nli(Filter):
    name = "nli"
    reads = ("rewrite_raw", "original", "instruction")
    writes = ("nli_label", "nli_logits")
    phase = 0
    reasons = (Reason.NLI_CONTRADICTION, Reason.NLI_TOO_LONG)
    not_scorable = frozenset({Reason.NLI_TOO_LONG})
    scorer = "pf1m.models.scorers.nli:NliScorer"
    scoring_settings = ("model", "trust_remote_code", "premise", "hypothesis")
    labels = NLI_LABELS
    labels_title = "NLI label (contradiction is rejected)"

    def request(self, row: Row, settings: Any) -> tuple[str, str]:
        fields = {
            "rewrite": row["rewrite_raw"] or "",
            "raw": row["original"] or "",
            "question": question(row["instruction"] or ""),
        }
        return settings.premise.format(**fields), settings.hypothesis.format(**fields)

    def record(self, row: dict[str, Any], logits: list[float]) -> None:
        row["nli_logits"] = logits
        row["nli_label"] = NLI_LABELS[max(range(len(logits)), key=logits.__getitem__)]

    def decide(self, row: Row, settings: Any) -> list[str]:
        return [Reason.NLI_CONTRADICTION] if row["nli_label"] == "contradiction" else []
