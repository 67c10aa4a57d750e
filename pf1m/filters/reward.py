"""Reward (PAPER.md step 6): a sequence-classification reward model on (instruction, output)
and on (instruction, original), both recorded. `min_reward` and `min_gain` make it a filter;
`paper` leaves both off and only records, like the released PF-1M. Inputs past the model's
length are truncated (the reward is a recorded score, not a decision, by default)."""

from collections.abc import Mapping
from typing import Any

from pf1m.filters.batching import SequenceClassifier
from pf1m.filters.nli import question
from pf1m.schemas.config import Filters, RewardFilter
from pf1m.schemas.reasons import Reason

NAME = "reward"
SCORE_FIELD = "reward"  # null when this filter did not score the row
# Reasons given instead of a score (the input cannot be scored at any threshold)
NOT_SCORABLE: set[str] = set()


def request(row: Mapping[str, Any], filters: Filters) -> tuple[str, str, str]:
    return question(row["instruction"] or ""), row["output"] or "", row["original"] or ""


def record(row: dict[str, Any], value: tuple[float, float]) -> None:
    row["reward"], row["reward_original"] = value


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    cfg, reward = filters.reward, row["reward"]
    if reward is None:
        return []
    reasons = []
    if cfg.min_reward is not None and reward < cfg.min_reward:
        reasons.append(Reason.REWARD_BELOW_MIN)
    gain_known = row["reward_original"] is not None
    if cfg.min_gain is not None and gain_known and reward - row["reward_original"] < cfg.min_gain:
        reasons.append(Reason.REWARD_LOW_GAIN)
    return reasons


class Scorer:
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
