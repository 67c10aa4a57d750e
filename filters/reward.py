"""Reward (PAPER.md step 6): a sequence-classification reward model on (instruction, output)
and on (instruction, original), both recorded. `min_reward` and `min_gain` make it a filter;
`paper` leaves both off and only records, like the released PF-1M. Inputs past the model's
length are truncated (the reward is a recorded score, not a decision, by default)."""

from collections.abc import Mapping
from typing import Any

from filters.batching import length_chunks
from filters.nli import question
from schemas.config import Filters, RewardFilter
from schemas.reasons import Reason

NAME = "reward"


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
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        kw = {"trust_remote_code": cfg.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, **kw)
        self.model = AutoModelForSequenceClassification.from_pretrained(cfg.model, **kw)
        self.model.to(device).eval()
        self.device = device
        self.chunk = chunk
        self.max_len = min(
            self.tokenizer.model_max_length, self.model.config.max_position_embeddings
        )

    def unsupported(self, item: tuple[str, str, str]) -> str | None:
        return None

    def score(self, items: list[tuple[str, str, str]]) -> list[tuple[float, float]]:
        import torch

        questions = [q for q, _, _ in items] * 2
        answers = [o for _, o, _ in items] + [r for _, _, r in items]
        enc = self.tokenizer(questions, answers, truncation=True, max_length=self.max_len)
        logits = [0.0] * len(questions)
        for idx in length_chunks([len(ids) for ids in enc["input_ids"]], self.chunk):
            batch = self.tokenizer.pad(
                {k: [enc[k][i] for i in idx] for k in enc}, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                values = self.model(**batch).logits[:, 0].float().cpu().tolist()
            for i, value in zip(idx, values, strict=True):
                logits[i] = value
        n = len(items)
        return list(zip(logits[:n], logits[n:], strict=True))
