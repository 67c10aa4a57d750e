"""The STS filter's model: a sentence-transformers encoder; cosine of (raw, rewrite)."""

from pf1m.models.hub import pretrained
from pf1m.schemas.config import StsFilter
from pf1m.schemas.reasons import Reason


class StsScorer:
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
