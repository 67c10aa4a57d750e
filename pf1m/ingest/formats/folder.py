"""`image-folder`: a classification set laid out as ROOT/CLASS/IMAGE (ELEVATER, ImageNet style).

Each class keeps at most `--per-class N` images (the paper: 32), a sample chosen by (seed,
class) from the sorted listing, so the same seed picks the same images. The response is
"a photo of a {class}" with the folder name's underscores as spaces, then the class's knowledge
text from `--knowledge` (a JSON object, class -> text, keyed by folder or display name).
"""

import json
import random
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from pf1m.ingest.formats.common import SourceError, sanitize_key
from pf1m.ingest.phrasing import choose
from pf1m.schemas.ingest import (
    ImageRef,
    IngestPhrasing,
    IngestRequest,
    Skip,
    SkipReason,
    SourceRecord,
)

Item = SourceRecord | Skip


def image_suffixes() -> set[str]:
    """Every file suffix PIL can open; other files in a class folder are not images."""
    Image.init()
    return {ext.lower() for ext in Image.registered_extensions()}


def listing(root: Path) -> dict[str, list[str]]:
    """class folder -> its image files (names), both sorted; hidden entries left out."""
    suffixes = image_suffixes()
    classes = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            p.name
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
        )
        classes[folder.name] = files
    return classes


def _knowledge(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"--knowledge {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SourceError(f"--knowledge {path}: must be a JSON object of class -> text")
    return data


def read_image_folder(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    root = Path(req.images)
    classes = listing(root)
    if not classes:
        raise SourceError(f"--images {root}: no class folders (expected ROOT/CLASS/IMAGE)")
    return _folder(req, ph, classes, _knowledge(req.knowledge))


def _folder(
    req: IngestRequest, ph: IngestPhrasing, classes: dict[str, list[str]], knowledge: dict
) -> Iterator[Item]:
    cfg = ph.classification
    for folder, files in classes.items():
        chosen = files
        if req.per_class is not None and len(files) > req.per_class:
            picked = random.Random(f"{req.seed}:{folder}").sample(range(len(files)), req.per_class)
            chosen = [files[i] for i in sorted(picked)]
            dropped = len(files) - len(chosen)
            detail = f"class {folder}: {dropped} of {len(files)} images beyond --per-class"
            yield Skip(sanitize_key(folder), SkipReason.PER_CLASS_CAP, detail, count=dropped)
        name = folder.replace("_", " ").strip()
        extra = knowledge.get(folder) or knowledge.get(name)
        response = cfg.response.format(**{"class": name})
        if extra and extra.strip():
            response += "\n" + extra.strip()
        for file in chosen:
            key = sanitize_key(f"{folder}/{Path(file).stem}")
            yield SourceRecord(
                key=key,
                instruction=ph.image_prefix + choose(cfg.instructions, req.seed, key),
                response=response,
                task="classification",
                images=[ImageRef(f"{folder}/{file}")],
                meta={"class": name, "file": f"{folder}/{file}"},
            )
