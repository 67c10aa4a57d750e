"""The reward filter's model: a sequence-classification reward model scoring (question, output)
and (question, original) in one pass; inputs past its length are truncated."""

from pf1m.models.scorers.classifier import SequenceClassifier
from pf1m.schemas.config import RewardFilter


class RewardScorer:
    def __init__(self, cfg: RewardFilter, device: str, chunk: int) -> None:
        self.clf = SequenceClassifier(cfg.model, cfg.trust_remote_code, device, chunk)

    def unsupported(self, item: tuple[str, str, str]) -> str | None:
        return None

    def score(self, items: list[tuple[str, str, str]]) -> list[tuple[float, float]]:
        questions = [q for q, _, _ in items] * 2
        answers = [o for _, o, _ in items] + [r for _, _, r in items]
        rows = self.clf.logits(questions, answers, truncation=True, max_length=self.clf.max_len)
        n = len(items)
        return [(rows[i][0], rows[n + i][0]) for i in range(n)]
