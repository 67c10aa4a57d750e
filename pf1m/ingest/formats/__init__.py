"""Per-format readers: a source -> an ordered stream of `SourceRecord`s and `Skip`s.

A reader is called as `READERS[format](request, phrasing)`: it checks what it can up front
(raising `SourceError` or `ConfigError` before any work) and returns a lazy iterator. Readers
are pure: no Ray, no image I/O, no tar writing; the order they yield is the shards' order.
"""

from collections.abc import Callable, Iterator

from pf1m.ingest.formats.coco import read_coco_captions, read_refcoco
from pf1m.ingest.formats.common import SourceError
from pf1m.ingest.formats.folder import read_image_folder
from pf1m.ingest.formats.llava import read_llava
from pf1m.ingest.formats.table import read_csv, read_jsonl
from pf1m.ingest.formats.vqa import read_aokvqa, read_gqa, read_vqa_v2
from pf1m.schemas.ingest import FORMATS, IngestPhrasing, IngestRequest, Skip, SourceRecord

Reader = Callable[[IngestRequest, IngestPhrasing], Iterator[SourceRecord | Skip]]

READERS: dict[str, Reader] = {
    "coco-captions": read_coco_captions,
    "refcoco": read_refcoco,
    "vqa-v2": read_vqa_v2,
    "gqa": read_gqa,
    "aokvqa": read_aokvqa,
    "image-folder": read_image_folder,
    "llava": read_llava,
    "jsonl": read_jsonl,
    "csv": read_csv,
}
DEFAULT_SOURCE = {
    "coco-captions": "coco",
    "refcoco": "refcoco",
    "vqa-v2": "vqav2",
    "gqa": "gqa",
    "aokvqa": "aokvqa",
    "llava": "llava",
}
assert set(READERS) == set(FORMATS)

__all__ = ["DEFAULT_SOURCE", "READERS", "SourceError"]
