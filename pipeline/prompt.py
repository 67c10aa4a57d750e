"""Prompt rendering, answer extraction and per-sample seeds: pure functions, no model needed."""

import hashlib

from schemas.sample import IMAGE_MARKER


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


def extract_answer(completion: str, marker: str) -> str:
    """The text after the last answer marker if present, else the whole completion, stripped."""
    at = completion.rfind(marker) if marker else -1
    return (completion[at + len(marker) :] if at >= 0 else completion).strip()


def sample_seed(run_seed: int, uid: str) -> int:
    """A sample's sampling seed depends only on (run seed, uid), never on batch or shard."""
    digest = hashlib.blake2b(f"{run_seed}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF
