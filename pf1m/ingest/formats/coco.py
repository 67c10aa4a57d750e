"""COCO-layout sources: `coco-captions` (captions_*.json, optionally instances_*.json for the box
block) and `refcoco` (the refs of RefCOCO/RefCOCO+/RefCOCOg as JSON, plus their instances.json).

Both files are streamed with ijson, one section per pass. What is kept in memory is an index,
not the JSON: per image its file name and size, its captions, and its boxes as packed floats
(5 per box): about 160 MB at COCO train2017's counts (118k images, 590k captions, 860k
boxes), where `json.load` makes Python objects several times the 448 MB instances file.
"""

from array import array
from collections.abc import Iterator
from pathlib import Path

from pf1m.ingest.formats.common import SourceError, json_items, sanitize_key, text
from pf1m.ingest.phrasing import box_lines, caption_response, choose
from pf1m.schemas.ingest import (
    CaptionPhrasing,
    ImageRef,
    IngestPhrasing,
    IngestRequest,
    Skip,
    SkipReason,
    SourceRecord,
)

Item = SourceRecord | Skip


def _images(path: str) -> dict[int, tuple[str, float, float]]:
    """id -> (file_name, width, height), in the file's order."""
    images = {}
    for img in json_items(path, "images.item"):
        if isinstance(img, dict) and "id" in img:
            images[img["id"]] = (text(img.get("file_name")), img.get("width"), img.get("height"))
    if not images:
        raise SourceError(f"{path}: no `images` array with ids (is it a COCO-format JSON?)")
    return images


def _categories(path: str) -> dict[int, str]:
    return {c["id"]: text(c.get("name")) for c in json_items(path, "categories.item")}


def _instances(path: str, wanted: set, include_crowd: bool) -> dict[int, array]:
    """image id -> packed (category id, x, y, w, h) of its boxes, for the images in `wanted`."""
    boxes: dict[int, array] = {}
    for ann in json_items(path, "annotations.item"):
        image_id, bbox = ann.get("image_id"), ann.get("bbox")
        if image_id not in wanted or not isinstance(bbox, list) or len(bbox) != 4:
            continue
        if ann.get("iscrowd") and not include_crowd:
            continue
        boxes.setdefault(image_id, array("d")).extend([ann.get("category_id", -1), *bbox])
    return boxes


def _box_text(
    cfg: CaptionPhrasing, packed: array | None, cats: dict[int, str], size: tuple
) -> list[str] | None:
    """The box lines of an image; None when it has boxes but no usable width and height."""
    if not packed:
        return []
    width, height = size
    if not width or not height:
        return None
    boxes = [
        (cats.get(int(packed[i]), "object"), *packed[i + 1 : i + 5])
        for i in range(0, len(packed), 5)
    ]
    return box_lines(cfg, boxes, width, height)


def read_coco_captions(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    src = req.src[0]
    images = _images(src)
    if req.instances and not Path(req.instances).is_file():
        raise SourceError(f"--instances {req.instances}: no such file")
    return _captions(req, ph, src, images)


def _captions(req: IngestRequest, ph: IngestPhrasing, src: str, images: dict) -> Iterator[Item]:
    captions: dict[int, list[str]] = {}
    for ann in json_items(src, "annotations.item"):
        caption = text(ann.get("caption")) if isinstance(ann, dict) else ""
        if caption:
            captions.setdefault(ann.get("image_id"), []).append(caption)
    boxes: dict[int, array] = {}
    cats: dict[int, str] = {}
    if req.instances:
        cats = _categories(req.instances)
        boxes = _instances(req.instances, set(images), ph.caption.include_crowd)
        if any(not w or not h for _, w, h in images.values()):  # sizes from the instances
            sizes = _images(req.instances)
            images = {
                i: (name, w or sizes.get(i, ("", 0, 0))[1], h or sizes.get(i, ("", 0, 0))[2])
                for i, (name, w, h) in images.items()
            }
    for image_id, (file_name, width, height) in images.items():
        key = sanitize_key(image_id)
        caps = captions.pop(image_id, None)
        if not caps:
            yield Skip(key, SkipReason.NO_ANNOTATION, f"image {image_id}: no caption")
            continue
        lines = _box_text(ph.caption, boxes.pop(image_id, None), cats, (width, height))
        if lines is None:
            yield Skip(key, SkipReason.BAD_RECORD, f"image {image_id}: boxes but no width/height")
            continue
        yield SourceRecord(
            key=key,
            instruction=ph.image_prefix + choose(ph.caption.instructions, req.seed, key),
            response=caption_response(ph.caption, caps, lines),
            task="caption",
            images=[ImageRef(file_name)],
            meta={"image_id": image_id, "file_name": file_name, "boxes": len(lines)},
        )


def read_refcoco(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    assert req.instances is not None  # IngestRequest requires it for refcoco
    images = _images(req.instances)
    return _refs(req, ph, images)


def _annotations(path: str) -> dict[int, tuple]:
    """annotation id -> (image id, category id, x, y, w, h)."""
    anns = {}
    for ann in json_items(path, "annotations.item"):
        bbox = ann.get("bbox")
        if "id" in ann and isinstance(bbox, list) and len(bbox) == 4:
            anns[ann["id"]] = (ann.get("image_id"), ann.get("category_id"), *bbox)
    return anns


def _refs(req: IngestRequest, ph: IngestPhrasing, images: dict) -> Iterator[Item]:
    assert req.instances is not None
    anns = _annotations(req.instances)
    cats = _categories(req.instances)
    cfg = ph.region_caption
    for ref in json_items(req.src[0], "item"):
        if not isinstance(ref, dict):
            raise SourceError(f"{req.src[0]}: a ref is not an object (is it refs as JSON?)")
        if req.split is not None and ref.get("split") != req.split:
            continue
        ref_id = ref.get("ref_id")
        key = sanitize_key(ref_id)
        ann = anns.get(ref.get("ann_id"))
        if not key or ann is None:
            detail = f"ref {ref_id}: ann_id {ref.get('ann_id')} not in --instances"
            yield Skip(key or "?", SkipReason.BAD_RECORD, detail)
            continue
        image_id, category_id, x, y, w, h = ann
        if image_id not in images:
            yield Skip(key, SkipReason.BAD_RECORD, f"ref {ref_id}: image {image_id} unknown")
            continue
        file_name, width, height = images[image_id]
        sentences: list[str] = []
        for s in ref.get("sentences") or []:
            sent = text(s.get("raw") or s.get("sent")) if isinstance(s, dict) else ""
            if sent and sent not in sentences:
                sentences.append(sent)
        if not sentences:
            yield Skip(key, SkipReason.NO_ANNOTATION, f"ref {ref_id}: no sentences")
            continue
        meta = {
            "ref_id": ref_id,
            "ann_id": ref.get("ann_id"),
            "image_id": image_id,
            "split": ref.get("split"),
            "category": cats.get(category_id, ""),
            "bbox_xywh": [x, y, w, h],
        }
        yield SourceRecord(
            key=key,
            instruction=ph.image_prefix + choose(cfg.instructions, req.seed, key),
            response="\n".join(sentences),
            task="region_caption",
            images=[ImageRef(file_name, box=(x, y, w, h))],
            meta=meta,
        )
