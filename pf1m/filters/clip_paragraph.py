"""CLIPScore paragraph filter (PAPER.md step 5, captioning).

The rewrite is split into paragraphs on blank lines. Each paragraph's score is 100 x the cosine
between the image embedding and the mean of the normalised text embeddings of its first 10
'.'-separated sentences (pf1m.models.scorers.clip). Paragraphs under the threshold are left out
of `output`; all of them are kept with their scores in `paragraphs`, so any threshold can
rebuild `output`. A one-paragraph rewrite is scored but not filtered. A sample with several
images scores each paragraph against each image and keeps the best: a paragraph may describe
either image.
"""

import re
from typing import Any

from pf1m.filters.base import Filter, Histogram, Row
from pf1m.schemas.reasons import Reason

_BLANK_LINE = re.compile(r"\n\s*\n")


def split_paragraphs(text: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINE.split(text or "") if p.strip()]


def sentences(paragraph: str, limit: int) -> list[str]:
    parts = [s.strip() for s in paragraph.split(".") if s.strip()]
    return parts[:limit] or [paragraph]


def rebuild_output(paragraphs: list[dict], threshold: float) -> tuple[str | None, list[str]]:
    """(output, reasons) from stored paragraphs; None output means leave it as it is."""
    if len(paragraphs) < 2:
        return None, []
    kept = [p["text"] for p in paragraphs if p["clip_score"] >= threshold]
    if not kept:
        return "", [Reason.CLIP_ALL_REMOVED]
    return "\n\n".join(kept), []


class ClipParagraph(Filter):
    name = "clip_paragraph"
    reads = ("images", "rewrite_raw")
    writes = ("paragraphs",)
    phase = 0
    reasons = (Reason.CLIP_ALL_REMOVED, Reason.CLIP_NO_IMAGE)
    not_scorable = frozenset({Reason.CLIP_NO_IMAGE})
    scorer = "pf1m.models.scorers.clip:ClipScorer"
    scoring_settings = ("model", "pretrained", "trust_remote_code", "max_sentences")
    histograms = (
        Histogram(
            "CLIP score per paragraph",
            lambda r: [p["clip_score"] for p in r["paragraphs"] or []],
            lambda s: s.threshold,
        ),
    )

    def request(self, row: Row, settings: Any) -> dict | str:
        """Images and each paragraph's sentences, or a reason code when there is no image."""
        images = [img["bytes"] for img in row["images"] or [] if img.get("bytes")]
        if not images:
            return Reason.CLIP_NO_IMAGE
        paragraphs = split_paragraphs(row["rewrite_raw"])
        return {
            "images": images,
            "paragraphs": [sentences(p, settings.max_sentences) for p in paragraphs],
        }

    def record(self, row: dict[str, Any], scores: list[float]) -> None:
        texts = split_paragraphs(row["rewrite_raw"])
        row["paragraphs"] = [
            {"text": t, "clip_score": s} for t, s in zip(texts, scores, strict=True)
        ]

    def after_phase(self, row: dict[str, Any], settings: Any) -> None:
        """`output` without the paragraphs under the threshold (the reason comes from
        `decide`)."""
        if row["paragraphs"] is None:
            return
        output, _ = rebuild_output(row["paragraphs"], settings.threshold)
        if output is not None:
            row["output"] = output

    def decide(self, row: Row, settings: Any) -> list[str]:
        if row["paragraphs"] is None:
            return []
        return rebuild_output(row["paragraphs"], settings.threshold)[1]
