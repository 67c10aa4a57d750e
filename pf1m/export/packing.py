"""Multi-turn packing (PAPER.md, "After PF-1M"): up to K random samples concatenated into one
conversation under a token budget, so a trainer wastes no context on padding.

Streaming and seeded: samples are read in windows of `window`; each window is shuffled with a
generator seeded by (seed, window index) and packed greedily, so memory holds one window and
the same input and seed give the same conversations. Every sample lands in exactly one
conversation; a sample that alone exceeds the budget becomes a conversation of its own,
flagged over budget, rather than being dropped or truncated.
"""

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pack(
    items: Iterable[T],
    k: int,
    fits: Callable[[Sequence[T]], bool],
    *,
    seed: int,
    window: int,
) -> Iterator[tuple[list[T], bool]]:
    """(group, over_budget) for every group of 1..k items; `fits(group)` says whether a group is
    within the budget. Groups are greedy over each shuffled window."""
    if k < 1:
        raise ValueError("k must be at least 1")
    for w, batch in enumerate(windows(items, window)):
        random.Random(f"{seed}:{w}").shuffle(batch)
        group: list[T] = []
        for item in batch:
            if group and len(group) < k and fits([*group, item]):
                group.append(item)
                continue
            if group:
                yield group, False
            group = [item]
            if not fits(group):
                yield group, True
                group = []
        if group:
            yield group, False


class TokenCounter:
    """Tokens of a rendered conversation: the text without image markers, by the tokenizer,
    plus `image_tokens` for each image (what the trainer's vision tower puts in its place)."""

    def __init__(self, tokenizer: Any, image_tokens: int, image_marker: str) -> None:
        self.tokenizer = tokenizer
        self.image_tokens = image_tokens
        self.image_marker = image_marker

    def __call__(self, text: str, n_images: int) -> int:
        plain = text.replace(self.image_marker, "")
        ids = self.tokenizer(plain, add_special_tokens=False)["input_ids"]
        return len(ids) + n_images * self.image_tokens


def load_tokenizer(name: str) -> Any:
    """A hub id or local path; remote code stays off."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
