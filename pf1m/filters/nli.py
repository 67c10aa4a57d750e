"""NLI filter (PAPER.md step 4, VQA): a cross-encoder on the paper's premise/hypothesis strings;
reject when the argmax is contradiction. Logits are stored in the canonical order
(contradiction, entailment, neutral) whatever the model's own order, read from its id2label."""

from collections.abc import Mapping
from typing import Any

from pf1m.filters.batching import SequenceClassifier
from pf1m.schemas.config import Filters, NliFilter
from pf1m.schemas.reasons import Reason
from pf1m.schemas.rows import NLI_LABELS
from pf1m.schemas.sample import IMAGE_MARKER

NAME = "nli"
SCORE_FIELD = "nli_label"  # null when this filter did not score the row
# Reasons given instead of a score (the input cannot be scored at any threshold)
NOT_SCORABLE: set[str] = {Reason.NLI_TOO_LONG}


def question(instruction: str) -> str:
    return " ".join(instruction.replace(IMAGE_MARKER, " ").split())


def request(row: Mapping[str, Any], filters: Filters) -> tuple[str, str]:
    cfg = filters.nli
    fields = {
        "rewrite": row["rewrite_raw"] or "",
        "raw": row["original"] or "",
        "question": question(row["instruction"] or ""),
    }
    return cfg.premise.format(**fields), cfg.hypothesis.format(**fields)


def record(row: dict[str, Any], logits: list[float]) -> None:
    row["nli_logits"] = logits
    row["nli_label"] = NLI_LABELS[max(range(len(logits)), key=logits.__getitem__)]


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    return [Reason.NLI_CONTRADICTION] if row["nli_label"] == "contradiction" else []


def canonical_order(id2label: Mapping[int, str]) -> list[int]:
    """Model output index of each canonical label; a model lacking one cannot be used."""
    index = {str(label).lower(): int(i) for i, label in id2label.items()}
    missing = [label for label in NLI_LABELS if label not in index]
    if missing:
        raise ValueError(
            f"NLI model has no {', '.join(missing)} label (id2label: {dict(id2label)})"
        )
    return [index[label] for label in NLI_LABELS]


class Scorer:
    def __init__(self, cfg: NliFilter, device: str, chunk: int) -> None:
        self.clf = SequenceClassifier(cfg.model, cfg.trust_remote_code, device, chunk)
        self.order = canonical_order(self.clf.model.config.id2label)

    def unsupported(self, item: tuple[str, str]) -> str | None:
        length = len(self.clf.tokenizer(*item)["input_ids"])
        return Reason.NLI_TOO_LONG if length > self.clf.max_len else None

    def score(self, items: list[tuple[str, str]]) -> list[list[float]]:
        rows = self.clf.logits([p for p, _ in items], [h for _, h in items])
        return [[row[i] for i in self.order] for row in rows]
