"""CLIPScore paragraph filter (PAPER.md step 5, captioning).

The rewrite is split into paragraphs on blank lines. Each paragraph's score is 100 x the cosine
between the image embedding and the mean of the normalised text embeddings of its first 10
'.'-separated sentences. Paragraphs under the threshold are left out of `output`; all of them
are kept with their scores in `paragraphs`, so any threshold can rebuild `output`. A
one-paragraph rewrite is scored but not filtered. A sample with several images scores each
paragraph against each image and keeps the best: a paragraph may describe either image.
"""

import io
import re
from collections.abc import Mapping
from typing import Any

from pf1m.models.hub import open_clip_args
from pf1m.schemas.config import ClipParagraphFilter, Filters
from pf1m.schemas.reasons import Reason

NAME = "clip_paragraph"
SCORE_FIELD = "paragraphs"  # null when this filter did not score the row
# Reasons given instead of a score (the input cannot be scored at any threshold)
NOT_SCORABLE: set[str] = {Reason.CLIP_NO_IMAGE}
_BLANK_LINE = re.compile(r"\n\s*\n")


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINE.split(text or "") if p.strip()]


def sentences(paragraph: str, limit: int) -> list[str]:
    parts = [s.strip() for s in paragraph.split(".") if s.strip()]
    return parts[:limit] or [paragraph]


def request(row: Mapping[str, Any], filters: Filters) -> dict | str:
    """Images and each paragraph's sentences, or a reason code when there is no image."""
    images = [img["bytes"] for img in row["images"] or [] if img.get("bytes")]
    if not images:
        return Reason.CLIP_NO_IMAGE
    limit = filters.clip_paragraph.max_sentences
    paragraphs = split_paragraphs(row["rewrite_raw"])
    return {"images": images, "paragraphs": [sentences(p, limit) for p in paragraphs]}


def record(row: dict[str, Any], scores: list[float]) -> None:
    texts = split_paragraphs(row["rewrite_raw"])
    row["paragraphs"] = [{"text": t, "clip_score": s} for t, s in zip(texts, scores, strict=True)]


def rebuild_output(paragraphs: list[dict], threshold: float) -> tuple[str | None, list[str]]:
    """(output, reasons) from stored paragraphs; None output means leave it as it is."""
    if len(paragraphs) < 2:
        return None, []
    kept = [p["text"] for p in paragraphs if p["clip_score"] >= threshold]
    if not kept:
        return "", [Reason.CLIP_ALL_REMOVED]
    return "\n\n".join(kept), []


def apply(row: dict[str, Any], filters: Filters) -> None:
    """Set `output` from the scored paragraphs (the reason comes from `decide`)."""
    if row["paragraphs"] is None:
        return
    output, _ = rebuild_output(row["paragraphs"], filters.clip_paragraph.threshold)
    if output is not None:
        row["output"] = output


def decide(row: Mapping[str, Any], filters: Filters) -> list[str]:
    if row["paragraphs"] is None:
        return []
    return rebuild_output(row["paragraphs"], filters.clip_paragraph.threshold)[1]


class Scorer:
    def __init__(self, cfg: ClipParagraphFilter, device: str, chunk: int) -> None:
        import open_clip

        name, weights, extra = open_clip_args(cfg.model, cfg.pretrained)
        model, _, self.preprocess = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=device, **extra
        )
        self.model = model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.device = device
        self.chunk = chunk  # images and 77-token texts are fixed-size: chunks bound memory only

    def _encode(self, encode, batch):
        import torch

        parts = [
            encode(batch[i : i + self.chunk].to(self.device)).float()
            for i in range(0, len(batch), self.chunk)
        ]
        out = torch.cat(parts)
        return out / out.norm(dim=-1, keepdim=True)

    def unsupported(self, item: dict) -> str | None:
        return None

    def score(self, items: list[dict]) -> list[list[float]]:
        import torch
        from PIL import Image

        images = [
            self.preprocess(Image.open(io.BytesIO(b)).convert("RGB"))
            for item in items
            for b in item["images"]
        ]
        texts = [s for item in items for para in item["paragraphs"] for s in para]
        with torch.inference_mode():
            img = self._encode(self.model.encode_image, torch.stack(images))
            txt = self._encode(self.model.encode_text, self.tokenizer(texts)) if texts else None
        out, i_img, i_txt = [], 0, 0
        for item in items:
            n_img = len(item["images"])
            item_img = img[i_img : i_img + n_img]
            i_img += n_img
            scores = []
            for para in item["paragraphs"]:
                mean = txt[i_txt : i_txt + len(para)].mean(dim=0)
                i_txt += len(para)
                cosine = item_img @ (mean / mean.norm())
                scores.append(float(100.0 * cosine.max()))
            out.append(scores)
        return out
