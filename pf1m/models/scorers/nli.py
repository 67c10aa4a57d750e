"""The NLI filter's model: a cross-encoder; logits in the canonical label order
(contradiction, entailment, neutral) whatever the model's own order, read from its id2label."""

from collections.abc import Mapping

from pf1m.models.scorers.classifier import SequenceClassifier
from pf1m.schemas.config import NliFilter
from pf1m.schemas.reasons import Reason
from pf1m.schemas.rows import NLI_LABELS


def canonical_order(id2label: Mapping[int, str]) -> list[int]:
    """Model output index of each canonical label; a model lacking one cannot be used."""
    index = {str(label).lower(): int(i) for i, label in id2label.items()}
    missing = [label for label in NLI_LABELS if label not in index]
    if missing:
        raise ValueError(
            f"NLI model has no {', '.join(missing)} label (id2label: {dict(id2label)})"
        )
    return [index[label] for label in NLI_LABELS]


class NliScorer:
    def __init__(self, cfg: NliFilter, device: str, chunk: int) -> None:
        self.clf = SequenceClassifier(cfg.model, cfg.trust_remote_code, device, chunk)
        self.order = canonical_order(self.clf.model.config.id2label)

    def unsupported(self, item: tuple[str, str]) -> str | None:
        length = len(self.clf.tokenizer(*item)["input_ids"])
        return Reason.NLI_TOO_LONG if length > self.clf.max_len else None

    def score(self, items: list[tuple[str, str]]) -> list[list[float]]:
        rows = self.clf.logits([p for p, _ in items], [h for _, h in items])
        return [[row[i] for i in self.order] for row in rows]
