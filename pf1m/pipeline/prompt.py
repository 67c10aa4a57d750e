"""Prompt rendering, answer extraction and per-sample seeds: pure functions, no model needed.

Two prompt styles (`rewriter.prompt.style`): `raw` fills one template string (the paper's);
`chat` builds the messages a chat template renders (pf1m/pipeline/chat_template.py renders them).
"""

import hashlib
from typing import Any

from pf1m.schemas.sample import IMAGE_MARKER


class ImageCountMismatch(ValueError):
    """The instruction's `<image>` markers do not match the sample's images."""


def place_images(
    instruction: str, n_images: int, image_token: str, without_markers: str = "first"
) -> str:
    """Put the model's image token where the `<image>` markers are. With no markers the images
    come first (DESIGN.md), or, for `without_markers="append"` (Polite Flamingo), at the end of
    the instruction in order, as its authors placed them. A marker count that differs from the
    image count is an error."""
    markers = instruction.count(IMAGE_MARKER)
    if markers == 0 and without_markers == "append":
        return instruction + image_token * n_images
    if markers == 0:
        return f"{image_token}\n" * n_images + instruction
    if markers != n_images:
        raise ImageCountMismatch(f"{markers} <image> markers for {n_images} images")
    return instruction.replace(IMAGE_MARKER, image_token)


def render_prompt(
    template: str,
    system: str,
    instruction: str,
    raw: str,
    n_images: int,
    image_token: str,
    without_markers: str = "first",
) -> str:
    """Fill the template's `{system}`, `{instruction}` and `{raw}`; values are not re-parsed."""
    placed = place_images(instruction, n_images, image_token, without_markers)
    return template.format(system=system, instruction=placed, raw=raw)


# Stands in for an image while the rewrite instruction is formatted, then splits the text into
# content parts; a NUL cannot occur in sample text (the reader takes JSON strings).
_IMAGE_SLOT = "\x00image\x00"


def chat_messages(
    system: str | None, template: str, instruction: str, raw: str, n_images: int
) -> list[dict[str, Any]]:
    """A system message (when set), then a user message: the rewrite instruction (`template`
    over `{instruction}` and `{raw}`) as text parts, with an image part at each `<image>` marker
    of the instruction (no markers: the images first). Parts use the `{"type": ...}` shape that
    chat templates read; empty text parts are left out."""
    markers = instruction.count(IMAGE_MARKER)
    if markers and markers != n_images:
        raise ImageCountMismatch(f"{markers} <image> markers for {n_images} images")
    text = template.format(instruction=instruction.replace(IMAGE_MARKER, _IMAGE_SLOT), raw=raw)
    pieces = text.split(_IMAGE_SLOT)
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images - markers)]
    for i, piece in enumerate(pieces):
        if i:
            content.append({"type": "image"})
        if piece:
            content.append({"type": "text", "text": piece})
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append({"role": "user", "content": content})
    return messages


def split_reasoning(completion: str, start: str, end: str) -> tuple[str | None, str]:
    """(reasoning, the rest). The block from the first `start` to the next `end` is the
    reasoning; a block opened and never closed is all reasoning and leaves no answer. No
    `start`: (None, completion). A block the chat template opened in the prompt has its `start`
    put back in front of the completion by the replica (pf1m/actors/replica.py)."""
    opened = completion.find(start)
    if opened < 0:
        return None, completion
    body_at = opened + len(start)
    closed = completion.find(end, body_at)
    if closed < 0:
        return completion[body_at:].strip(), ""
    rest = completion[:opened] + completion[closed + len(end) :]
    return completion[body_at:closed].strip(), rest


def extract_answer(completion: str, marker: str) -> str:
    """The text after the last answer marker if present, else the whole completion, stripped."""
    at = completion.rfind(marker) if marker else -1
    return (completion[at + len(marker) :] if at >= 0 else completion).strip()


def sample_seed(run_seed: int, uid: str) -> int:
    """A sample's sampling seed depends only on (run seed, uid), never on batch or shard."""
    digest = hashlib.blake2b(f"{run_seed}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
