"""Record layouts per format (pure: no I/O). A kept row becomes a released PF-1M record
(`pf1m-json`); one or more kept rows become a conversation, from which the `llava`, `hf` and
`webdataset` records are made. Images are referred to by whatever path the writer chose."""

import re
from collections.abc import Sequence
from typing import Any

from pf1m.filters.clip_paragraph import split_paragraphs
from pf1m.schemas.export import (
    IMG_PATH,
    Conversation,
    ConversationStyle,
    Pf1mExtra,
    Published,
    Turn,
)
from pf1m.schemas.sample import IMAGE_MARKER

Row = dict[str, Any]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAGIC = ((b"\x89PNG", "png"), (b"\xff\xd8", "jpg"), (b"RIFF", "webp"), (b"GIF8", "gif"))


def safe_component(text: str | None) -> str:
    """A path component from data: no separators, no `..`, never empty."""
    cleaned = _UNSAFE.sub("_", text or "").strip(".")
    return cleaned or "_"


def image_ext(image: dict[str, Any]) -> str:
    """The image's extension: from its stored name, else from its first bytes."""
    name = image.get("path") or ""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in ("png", "jpg", "jpeg", "webp", "gif"):
        return ext
    data = image.get("bytes") or b""
    return next((e for magic, e in _MAGIC if data.startswith(magic)), "bin")


def image_relpath(image_dir: str, row: Row, i: int) -> str:
    """Where a row's i-th image goes under an export: unique per uid, safe whatever the data."""
    parts = [safe_component(row["source"] or "unknown"), safe_component(row["shard"])]
    name = f"{safe_component(row['key'])}.{i}.{image_ext(row['images'][i])}"
    return "/".join([image_dir, *parts, name])


def with_markers(instruction: str, n_images: int) -> tuple[str, bool]:
    """The instruction with one `<image>` marker per image (added first, one per line, when it
    had none: DESIGN.md's placement); returns whether markers were added."""
    found = instruction.count(IMAGE_MARKER)
    if found == n_images:
        return instruction, False
    if found == 0:
        return f"{IMAGE_MARKER}\n" * n_images + instruction, True
    raise ValueError(f"{found} {IMAGE_MARKER} markers for {n_images} images")


def paragraph_flags(
    paragraphs: list[dict] | None, output: str, threshold: float | None
) -> list[bool] | None:
    """Which stored paragraphs `output` kept: matched in order against `output`'s paragraphs;
    when `output` was not built from them, the CLIP rule (pf1m/filters/clip_paragraph.py): all of
    a one-paragraph rewrite, else those at or above the run's threshold."""
    if paragraphs is None:
        return None
    wanted = split_paragraphs(output or "")
    flags, j = [], 0
    for p in paragraphs:
        hit = j < len(wanted) and p["text"] == wanted[j]
        flags.append(hit)
        j += hit
    if j == len(wanted):
        return flags
    if threshold is None or len(paragraphs) < 2:
        return [True] * len(paragraphs)
    return [p["clip_score"] >= threshold for p in paragraphs]


def pf1m_record(
    row: Row, image_paths: Sequence[str], published: Published, clip_threshold: float | None
) -> dict[str, Any]:
    """The released PF-1M layout; fields the paper omits for the task, or scores the row does
    not have, are absent. Everything else the row holds goes into the `pf1m` object."""
    instruction, added = with_markers(row["instruction"], len(image_paths))
    pieces = instruction.split(IMAGE_MARKER)
    text = pieces[0]
    for path, piece in zip(image_paths, pieces[1:], strict=True):
        text += f"{IMG_PATH}{path}{IMG_PATH}{piece}"
    flags = paragraph_flags(row["paragraphs"], row["output"], clip_threshold)
    paragraphs = row["paragraphs"] or []
    record: dict[str, Any] = {
        "input": text,
        "output": row["output"],
        "original": row["original"],
        "rouge_score": row["rouge_l"],
        "sts_similarity": row["sts"],
        "nli_similarity": row["nli_logits"],
        "reward": row["reward"],
    }
    if flags is not None:
        record["filtered_paragraphs"] = [
            [p["clip_score"], p["text"]] for p, k in zip(paragraphs, flags, strict=True) if not k
        ]
        record["paragraph_clip_scores"] = [
            p["clip_score"] for p, k in zip(paragraphs, flags, strict=True) if k
        ]
    allowed = published.allowed(row["task"])
    record = {k: v for k, v in record.items() if k in allowed and v is not None}
    extra = Pf1mExtra(
        uid=row["uid"],
        shard=row["shard"],
        key=row["key"],
        source=row["source"],
        task=row["task"],
        rewrite_raw=row["rewrite_raw"],
        paragraph_kept=flags,
        nli_label=row["nli_label"],
        reward_original=row["reward_original"],
        finish_reason=row["finish_reason"],
        prompt_tokens=row["prompt_tokens"],
        output_tokens=row["output_tokens"],
        reasoning=row.get("reasoning"),
        image_names=[img.get("path") for img in row["images"] or []],
        markers_added=added,
        run_id=row["run_id"],
    )
    record["pf1m"] = extra.model_dump(exclude_none=True, exclude_defaults=True)
    return record


def _template(text: str) -> tuple[str, str]:
    before, after = text.split("{text}")
    return before, after


def conversation(
    rows: Sequence[Row], image_refs: Sequence[Sequence[str]], style: ConversationStyle, conv_id: str
) -> Conversation:
    """Rows as consecutive (human, gpt) turns, each human turn with its own images; `text` is
    rendered with `style` and `assistant_spans` locate every gpt value inside it."""
    h_before, h_after = _template(style.human)
    g_before, g_after = _template(style.gpt)
    text, turns, spans, images = style.system, [], [], []
    for row, refs in zip(rows, image_refs, strict=True):
        human = with_markers(row["instruction"], len(refs))[0]
        human = human.replace(IMAGE_MARKER, style.image_marker)
        text += h_before + human + h_after + g_before
        start = len(text)
        text += row["output"] + g_after
        spans.append((start, start + len(row["output"])))
        turns += [
            Turn(speaker="human", value=human, loss=False),
            Turn(speaker="gpt", value=row["output"], loss=True),
        ]
        images += list(refs)
    return Conversation(
        id=conv_id,
        uids=[r["uid"] for r in rows],
        sources=[r["source"] for r in rows],
        tasks=[r["task"] for r in rows],
        images=images,
        turns=turns,
        text=text,
        assistant_spans=spans,
    )


def llava_record(conv: Conversation) -> dict[str, Any]:
    """LLaVA's layout: `image` (one) or `images` (several), `conversations` of from/value;
    the pf1m fields (uids, text, spans, loss flags) ride along and LLaVA loaders ignore them."""
    record: dict[str, Any] = {"id": conv.id}
    if len(conv.images) == 1:
        record["image"] = conv.images[0]
    elif conv.images:
        record["images"] = conv.images
    record["conversations"] = [{"from": t.speaker, "value": t.value} for t in conv.turns]
    record["pf1m"] = {
        "uids": conv.uids,
        "sources": conv.sources,
        "tasks": conv.tasks,
        "text": conv.text,
        "assistant_spans": [list(s) for s in conv.assistant_spans],
        "tokens": conv.tokens,
        "over_budget": conv.over_budget,
    }
    return record


def hf_row(conv: Conversation, image_bytes: Sequence[bytes]) -> dict[str, Any]:
    """A row of the `hf` table (pf1m/schemas/export.py HF_SCHEMA): images embedded."""
    return {
        "id": conv.id,
        "uids": conv.uids,
        "sources": conv.sources,
        "tasks": conv.tasks,
        "images": [{"bytes": b, "path": p} for b, p in zip(image_bytes, conv.images, strict=True)],
        "conversations": [t.model_dump(by_alias=True) for t in conv.turns],
        "text": conv.text,
        "assistant_spans": [list(s) for s in conv.assistant_spans],
        "tokens": conv.tokens,
        "over_budget": conv.over_budget,
    }


def wds_json(conv: Conversation) -> dict[str, Any]:
    """The `KEY.json` member of a WebDataset sample (its images are `KEY.I.EXT` members)."""
    return conv.model_dump(by_alias=True, mode="json")
