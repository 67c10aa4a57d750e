"""STS filter (PAPER.md step 3, captioning): cosine similarity of the raw annotation and the
rewrite with a sentence-transformers model; reject below the threshold (`paper`: 0.40)."""

from collections.abc import Mapping
from typing import Any

from pf1m.models.hub import pretrained
from pf1m.schemas.config import Filters, StsFilter
from pf1m.schemas.reasons import Reason

NAME = "sts"
SCORE_FIELD = "sts"  # null when this filter did not score the row
# Reasons given instead of a score (the input cannot be scored at any threshold)
NOT_SCORABLE: set[str] = {Reason.STS_TOO_LONG}


def request(row: Mapping[str, Any], filters: Filters) -> tuple[str, str]:
    return row["original"] or "", row["rewrite_raw"] or ""


def record(row: dict[str, Any], value: float) -> None:
    row["sts"] = value


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    if row["sts"] is not None and row["sts"] < filters.sts.threshold:
        return [Reason.STS_BELOW_THRESHOLD]
    return []


class Scorer:
    def __init__(self, cfg: StsFilter, device: str, chunk: int) -> None:
        from sentence_transformers import SentenceTransformer

        model, pin = pretrained(cfg.model)
        self.model = SentenceTransformer(
            model, device=device, trust_remote_code=cfg.trust_remote_code, **pin
        )
        self.chunk = chunk

    def unsupported(self, item: tuple[str, str]) -> str | None:
        """Text past the model's max_seq_length would be silently truncated: say so instead."""
        limit = self.model.max_seq_length
        lengths = [len(self.model.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in item]
        return Reason.STS_TOO_LONG if max(lengths) > limit else None

    def score(self, items: list[tuple[str, str]]) -> list[float]:
        # One encode for both sides: sentence-transformers sorts all texts by length and runs
        # chunks of `batch_size`, so little compute goes to padding.
        texts = [a for a, _ in items] + [b for _, b in items]
        emb = self.model.encode(
            texts, batch_size=self.chunk, convert_to_tensor=True, normalize_embeddings=True
        )
        n = len(items)
        return (emb[:n] * emb[n:]).sum(dim=-1).float().cpu().tolist()
