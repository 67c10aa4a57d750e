"""Reward (PAPER.md step 6): a sequence-classification reward model on (instruction, output)
and on (instruction, original), both recorded. `min_reward` and `min_gain` make it a filter;
`paper` leaves both off and only records, like the released PF-1M. Inputs past the model's
length are truncated (the reward is a recorded score, not a decision, by default)."""

from typing import Any

from pf1m.filters.base import Filter, Histogram, Row
from pf1m.filters.nli import question
from pf1m.schemas.reasons import Reason


def _gain(row: Row) -> list[float]:
    if row["reward"] is None or row["reward_original"] is None:
        return []
    return [row["reward"] - row["reward_original"]]


class Reward(Filter):
    name = "reward"
    reads = ("instruction", "output", "original")
    writes = ("reward", "reward_original")
    phase = 1  # reads `output`, rebuilt by phase 0
    reasons = (Reason.REWARD_BELOW_MIN, Reason.REWARD_LOW_GAIN)
    scorer = "pf1m.models.scorers.reward:RewardScorer"
    scoring_settings = ("model", "trust_remote_code")
    histograms = (
        Histogram(
            "Reward of the output",
            lambda r: [r["reward"]] if r["reward"] is not None else [],
            lambda s: s.min_reward,
        ),
        Histogram("Reward gain (output - raw)", _gain, lambda s: s.min_gain),
    )

    def request(self, row: Row, settings: Any) -> tuple[str, str, str]:
        return question(row["instruction"] or ""), row["output"] or "", row["original"] or ""

    def record(self, row: dict[str, Any], value: tuple[float, float]) -> None:
        row["reward"], row["reward_original"] = value

    def decide(self, row: Row, settings: Any) -> list[str]:
        reward = row["reward"]
        if reward is None:
            return []
        reasons = []
        if settings.min_reward is not None and reward < settings.min_reward:
            reasons.append(Reason.REWARD_BELOW_MIN)
        gain = _gain(row)
        if settings.min_gain is not None and gain and gain[0] < settings.min_gain:
            reasons.append(Reason.REWARD_LOW_GAIN)
        return reasons
