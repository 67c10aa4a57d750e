"""No-repeat n-grams over the whole sequence (prompt included), on tensors.

Same bans as transformers' `NoRepeatNGramLogitsProcessor` (which, for a decoder-only model,
sees the prompt too, as in the authors' transformers 4.28): a token is banned when it would
complete an n-gram that already occurs anywhere in the row. transformers builds a Python
dictionary of every n-gram of every row at every step, which dominates a step's time for
long prompts and many beams; this one compares the row's last n-1 tokens with every window
in one batched tensor operation, on the model's device.
"""

import torch
from transformers import LogitsProcessor


class NoRepeatNGram(LogitsProcessor):
    def __init__(self, ngram_size: int) -> None:
        if ngram_size <= 0:
            raise ValueError(f"ngram_size must be positive, got {ngram_size}")
        self.n = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n, length = self.n, input_ids.shape[1]
        if length + 1 < n:
            return scores
        if n == 1:  # every token already present is banned
            return scores.scatter(1, input_ids, -float("inf"))
        windows = input_ids.unfold(1, n, 1)  # (rows, length - n + 1, n)
        prefix = input_ids[:, length - n + 1 :]  # the last n - 1 tokens
        hit = (windows[:, :, :-1] == prefix[:, None, :]).all(dim=-1)
        banned = torch.where(hit, windows[:, :, -1], -1)  # -1: no ban
        mask = torch.zeros(
            scores.shape[0], scores.shape[1] + 1, dtype=torch.bool, device=scores.device
        )
        mask.scatter_(1, banned + 1, True)  # column 0 collects the no-bans
        return scores.masked_fill(mask[:, 1:], -float("inf"))
