"""`llava`: LLaVA conversation JSON (llava_instruct_150k.json, llava_v1_5_mix665k.json): a list
of {"id", "image", "conversations": [{"from": "human"|"gpt", "value"}, ...]}, streamed.

A sample is one human turn and the reply that follows it: the first turn (`--turns first`), or
every turn (`--turns all`, keys ID_0, ID_1, ...). The first turn's `<image>` marker is kept as
LLaVA wrote it; later turns carry none, so the image comes first (the input contract's rule).
An entry without an image (the ShareGPT part of mix665k) becomes a `text` sample.
"""

from collections.abc import Iterator

from pf1m.ingest.formats.common import SourceError, json_items, sanitize_key, text
from pf1m.schemas.ingest import (
    ImageRef,
    IngestPhrasing,
    IngestRequest,
    Skip,
    SkipReason,
    SourceRecord,
)
from pf1m.schemas.sample import IMAGE_MARKER

Item = SourceRecord | Skip
HUMAN = ("human", "user")
ASSISTANT = ("gpt", "assistant")
DEFAULT_TASK = "vqa"


def turns(conversations: list) -> list[tuple[str, str]] | None:
    """(question, answer) pairs in order; None when the roles do not alternate human, gpt."""
    pairs = []
    for i in range(0, len(conversations) - 1, 2):
        q, a = conversations[i], conversations[i + 1]
        if not isinstance(q, dict) or not isinstance(a, dict):
            return None
        if q.get("from") not in HUMAN or a.get("from") not in ASSISTANT:
            return None
        pairs.append((text(q.get("value")), text(a.get("value"))))
    return pairs


def read_llava(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    return _llava(req)


def _llava(req: IngestRequest) -> Iterator[Item]:
    task = req.task or DEFAULT_TASK
    for index, entry in enumerate(json_items(req.src[0], "item")):
        if not isinstance(entry, dict):
            raise SourceError(f"{req.src[0]}: entry {index} is not an object (LLaVA layout?)")
        ident = entry.get("id", index)
        image = entry.get("image")
        paths = [image] if isinstance(image, str) else list(image or [])
        pairs = turns(entry.get("conversations") or [])
        if not pairs:
            yield Skip(sanitize_key(ident), SkipReason.BAD_RECORD, f"{ident}: no human/gpt turn")
            continue
        chosen = pairs[:1] if req.turns == "first" else pairs
        for t, (question, answer) in enumerate(chosen):
            key = sanitize_key(ident if req.turns == "first" else f"{ident}_{t}")
            if t > 0:
                question = question.replace(IMAGE_MARKER, "").strip()
            yield SourceRecord(
                key=key,
                instruction=question,
                response=answer,
                task=task if paths else "text",
                images=[ImageRef(p) for p in paths if isinstance(p, str)],
                meta={"id": ident, "turn": t},
            )
