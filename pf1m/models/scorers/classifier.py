"""A Hugging Face sequence classifier for the NLI and reward scorers: loading a model with its
tokenizer, and running length-sorted chunks. A batch of texts of mixed lengths padded to its
longest wastes most of its compute; sorting by length first keeps padding small."""

from typing import Any

from pf1m.models.hub import pretrained


def length_chunks(lengths: list[int], chunk: int) -> list[list[int]]:
    """Indices grouped into chunks of similar length (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + chunk] for i in range(0, len(order), chunk)]


class SequenceClassifier:
    """A Hugging Face sequence classifier and its tokenizer on one device."""

    def __init__(self, model: str, trust_remote_code: bool, device: str, chunk: int) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        model, pin = pretrained(model)
        kw = {"trust_remote_code": trust_remote_code, **pin}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **kw)
        self.model = AutoModelForSequenceClassification.from_pretrained(model, **kw)
        self.model.to(device).eval()
        self.device = device
        self.chunk = chunk
        self.max_len = min(
            self.tokenizer.model_max_length, self.model.config.max_position_embeddings
        )

    def logits(self, first: list[str], second: list[str], **tokenize: Any) -> list[list[float]]:
        """Logits for each (first, second) pair, computed in length-sorted chunks."""
        import torch

        enc = self.tokenizer(first, second, **tokenize)
        out: list[list[float]] = [[] for _ in first]
        for idx in length_chunks([len(ids) for ids in enc["input_ids"]], self.chunk):
            batch = self.tokenizer.pad(
                {k: [enc[k][i] for i in idx] for k in enc}, return_tensors="pt"
            ).to(self.device)
            with torch.inference_mode():
                rows = self.model(**batch).logits.float().cpu().tolist()
            for i, row in zip(idx, rows, strict=True):
                out[i] = row
        return out
