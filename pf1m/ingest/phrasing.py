"""The wording of ingested samples: load the phrasing file, pick an instruction per sample by
(seed, key), and lay out the caption box block. Pure functions; no I/O besides the YAML."""

import hashlib
from pathlib import Path

import yaml
from pydantic import ValidationError

from pf1m.schemas.config import ConfigError
from pf1m.schemas.ingest import CaptionPhrasing, IngestPhrasing

DEFAULT_PHRASING = Path(__file__).resolve().parents[1] / "configs" / "ingest.yaml"


def load_phrasing(path: str | Path) -> tuple[IngestPhrasing, str]:
    """The validated phrasing file and the sha256 of its bytes (recorded in ingest.json)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the phrasing file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        phrasing = IngestPhrasing.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError(f"invalid phrasing file {path}:\n" + "\n".join(lines)) from None
    return phrasing, hashlib.sha256(raw).hexdigest()


def choose(options: list[str], seed: int, key: str) -> str:
    """One of `options` from (seed, key) alone: the same sample gets the same wording in any
    process, any worker count, any order."""
    if len(options) == 1:
        return options[0]
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return options[int.from_bytes(digest, "big") % len(options)]


def box_lines(
    cfg: CaptionPhrasing,
    boxes: list[tuple[str, float, float, float, float]],
    width: float,
    height: float,
) -> list[str]:
    """`label: [x1, y1, x2, y2]` lines, corners normalised to 0..1 by the image size.
    `boxes` holds (label, x, y, w, h) in pixels, COCO's layout; at most `max_boxes` are kept,
    the largest, listed in their original order."""
    if len(boxes) > cfg.max_boxes:
        largest = sorted(range(len(boxes)), key=lambda i: -boxes[i][3] * boxes[i][4])
        boxes = [boxes[i] for i in sorted(largest[: cfg.max_boxes])]
    lines = []
    for label, x, y, w, h in boxes:
        corners = (x / width, y / height, (x + w) / width, (y + h) / height)
        x1, y1, x2, y2 = (round(min(max(v, 0.0), 1.0), cfg.box_decimals) for v in corners)
        lines.append(cfg.box_line.format(label=label, x1=x1, y1=y1, x2=x2, y2=y2))
    return lines


def caption_response(cfg: CaptionPhrasing, captions: list[str], boxes: list[str]) -> str:
    """All captions joined by newlines, then the box-format sentence and the box lines."""
    parts = list(captions)
    if boxes:
        parts += [cfg.box_intro, *boxes]
    return "\n".join(parts)
