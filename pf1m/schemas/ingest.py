"""Record shapes of `pf1m ingest`: the request, the phrasing file, the source records a reader
yields, the per-shard commit marker and `DIR/ingest.json`.

The samples it writes are `pf1m.schemas.sample.InputSample` records; nothing here re-declares them.
"""

import string
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pf1m.schemas.sample import Task

INGEST_VERSION = "1"
Format = Literal[
    "coco-captions",
    "refcoco",
    "vqa-v2",
    "gqa",
    "aokvqa",
    "image-folder",
    "llava",
    "jsonl",
    "csv",
]
FORMATS: tuple[str, ...] = Format.__args__  # type: ignore[attr-defined]
COLUMN_FIELDS = ("instruction", "response", "task", "key")  # --column FIELD=COLUMN; images apart
# Request fields that do not change the shards: they may differ between an ingest and its re-run.
NOT_HASHED = frozenset({"out", "workers", "task_cpus", "examples_per_reason"})


class SkipReason(StrEnum):
    """Why a source record did not become a sample. Skips are counted, never fatal."""

    PATH_ESCAPE = "path_escape"  # absolute, `..` or a symlink leading out of --images
    IMAGE_MISSING = "image_missing"
    IMAGE_UNREADABLE = "image_unreadable"  # an OS error reading the file
    IMAGE_UNDECODABLE = "image_undecodable"  # PIL cannot decode it
    IMAGE_TOO_LARGE = "image_too_large"  # PIL's decompression-bomb guard
    NO_ANNOTATION = "no_annotation"  # no caption, answer or sentence (test splits, unmatched ids)
    BAD_RECORD = "bad_record"  # fields missing, empty or wrong, or not a valid input sample
    DUPLICATE_KEY = "duplicate_key"  # its sanitised key is already in this shard
    PER_CLASS_CAP = "per_class_cap"  # image-folder: beyond --per-class N of its class


# ---- the request (one `pf1m ingest` command) ----


class IngestRequest(BaseModel):
    """Every argument of `pf1m ingest`; all but NOT_HASHED are recorded and compared on re-run."""

    model_config = ConfigDict(extra="forbid")

    format: Format
    src: list[str] = Field(default_factory=list)
    images: str
    out: str
    instances: str | None = None  # coco-captions (boxes), refcoco (regions)
    answers: str | None = None  # vqa-v2: the annotations file
    knowledge: str | None = None  # image-folder: JSON {class: text}
    shard_size: int = Field(default=1000, gt=0)
    max_samples: int | None = Field(default=None, gt=0)
    seed: int = 0
    source: str | None = None
    workers: int = Field(default=1, gt=0)
    task_cpus: float = Field(default=1.0, gt=0.0)  # Ray's logical CPUs per shard task
    config: str  # the phrasing file
    per_class: int | None = Field(default=None, gt=0)
    turns: Literal["first", "all"] = "first"
    task: Task | None = None  # llava, jsonl, csv: the task when no column gives it
    columns: dict[str, str] = Field(default_factory=dict)  # jsonl/csv: field -> column
    image_columns: list[str] = Field(default_factory=list)  # jsonl/csv, in image order
    image_pattern: str | None = None  # vqa-v2, gqa, aokvqa: image path from the ids
    split: str | None = None  # refcoco: keep refs of this split
    reencode: bool = False  # every image to PNG, not only the types the contract lacks
    examples_per_reason: int = Field(default=5, ge=0)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COLUMN_FIELDS))
        if unknown:
            known = [*COLUMN_FIELDS, "image"]
            raise ValueError(f"unknown field(s) {unknown}; known: {known}")
        return value

    @model_validator(mode="after")
    def _format_needs(self) -> "IngestRequest":
        f = self.format
        if f != "image-folder" and len(self.src) != 1:
            raise ValueError(f"{f} reads exactly one --src file ({len(self.src)} given)")
        if f == "image-folder" and self.src:
            raise ValueError("image-folder reads --images only; pass no --src")
        if f == "refcoco" and not self.instances:
            raise ValueError("refcoco needs --instances (the instances.json next to the refs)")
        if f == "vqa-v2" and not self.answers:
            raise ValueError("vqa-v2 needs --answers (the v2_mscoco_*_annotations.json file)")
        if f in ("jsonl", "csv"):
            missing = [c for c in ("instruction", "response") if c not in self.columns]
            if missing:
                raise ValueError(f"{f} needs --column {missing[0]}=COLUMN")
            if "task" not in self.columns and self.task is None:
                raise ValueError(f"{f} needs --task or --column task=COLUMN")
        elif self.columns or self.image_columns:
            raise ValueError(f"--column applies to jsonl and csv, not {f}")
        return self

    def hashed(self) -> dict[str, Any]:
        """The arguments that decide the shards' bytes."""
        return self.model_dump(exclude=set(NOT_HASHED))


# ---- the phrasing file (pf1m/configs/ingest.yaml) ----


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _needs(templates: list[str], allowed: set[str], required: set[str]) -> list[str]:
    for t in templates:
        names = _fields(t)
        if names - allowed:
            raise ValueError(f"{t!r}: unknown placeholder(s) {sorted(names - allowed)}")
        if required - names:
            raise ValueError(f"{t!r}: must contain {sorted('{' + n + '}' for n in required)}")
    return templates


Phrasings = list[str]


class CaptionPhrasing(_Strict):
    instructions: Phrasings = Field(min_length=1)
    box_intro: str = Field(min_length=1)
    box_line: str
    box_decimals: int = Field(ge=0, le=6)
    max_boxes: int = Field(gt=0)
    include_crowd: bool

    @field_validator("instructions")
    @classmethod
    def _plain(cls, v: Phrasings) -> Phrasings:
        return _needs(v, set(), set())

    @field_validator("box_line")
    @classmethod
    def _box(cls, v: str) -> str:
        names = {"label", "x1", "y1", "x2", "y2"}
        return _needs([v], names, names)[0]


class RegionPhrasing(_Strict):
    instructions: Phrasings = Field(min_length=1)
    box_colour: tuple[int, int, int]
    box_width: int = Field(gt=0)
    jpeg_quality: int = Field(ge=1, le=100)

    @field_validator("instructions")
    @classmethod
    def _plain(cls, v: Phrasings) -> Phrasings:
        return _needs(v, set(), set())

    @field_validator("box_colour")
    @classmethod
    def _rgb(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in v):
            raise ValueError("each channel must be 0..255")
        return v


class ClassificationPhrasing(_Strict):
    instructions: Phrasings = Field(min_length=1)
    response: str

    @field_validator("instructions")
    @classmethod
    def _plain(cls, v: Phrasings) -> Phrasings:
        return _needs(v, set(), set())

    @field_validator("response")
    @classmethod
    def _class(cls, v: str) -> str:
        return _needs([v], {"class"}, {"class"})[0]


class VqaPhrasing(_Strict):
    instructions: Phrasings = Field(min_length=1)

    @field_validator("instructions")
    @classmethod
    def _question(cls, v: Phrasings) -> Phrasings:
        return _needs(v, {"question"}, {"question"})


class RationalePhrasing(VqaPhrasing):
    response: str
    rationale_separator: str

    @field_validator("response")
    @classmethod
    def _answer(cls, v: str) -> str:
        return _needs([v], {"answer", "rationales"}, {"answer", "rationales"})[0]


class IngestPhrasing(_Strict):
    """pf1m/configs/ingest.yaml: where images go, and the wording of each format's samples."""

    image_prefix: str = Field(min_length=1)
    caption: CaptionPhrasing
    region_caption: RegionPhrasing
    classification: ClassificationPhrasing
    vqa: VqaPhrasing
    vqa_rationale: RationalePhrasing

    @field_validator("image_prefix")
    @classmethod
    def _one_marker(cls, v: str) -> str:
        from pf1m.schemas.sample import IMAGE_MARKER

        if v.count(IMAGE_MARKER) != 1:
            raise ValueError(f"must contain {IMAGE_MARKER} exactly once")
        return v


# ---- what a reader yields (in-memory records, passed to shard tasks) ----


@dataclass(frozen=True)
class ImageRef:
    """An image of a sample: its path under --images, and a box to draw on a copy (pixels,
    x, y, width, height) for region captions."""

    path: str
    box: tuple[float, float, float, float] | None = None


@dataclass
class SourceRecord:
    """One sample-to-be: the `InputSample` fields except `source`, with images still paths."""

    key: str
    instruction: str
    response: str
    task: str
    images: list[ImageRef]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skip:
    """A source record (or `count` of them) that will not become a sample, and why."""

    key: str
    reason: SkipReason
    detail: str
    count: int = 1


# ---- the outputs: DIR/_commits/SHARD.json and DIR/ingest.json ----


class SkipExample(BaseModel):
    key: str
    detail: str


class ShardMarker(BaseModel):
    """DIR/_commits/SHARD.json, written after SHARD.tar is renamed into place: the commit."""

    version: str = INGEST_VERSION
    shard: str
    file: str | None  # relative to DIR; None when every record of the chunk was skipped
    bytes: int = 0
    sha256: str | None = None
    records: int  # source records in this shard's chunk (written + skipped, cap skips aside)
    samples: int
    skipped: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, list[SkipExample]] = Field(default_factory=dict)
    committed_at: str


class SourceFingerprint(BaseModel):
    """A file's size and sha256, or for a folder the sha256 of its file names and sizes."""

    kind: Literal["file", "folder"]
    bytes: int
    sha256: str


class ShardSummary(BaseModel):
    file: str | None
    samples: int
    bytes: int
    sha256: str | None


class IngestManifest(BaseModel):
    """DIR/ingest.json: what was asked (compared on every re-run) and what came out."""

    version: str = INGEST_VERSION
    status: Literal["running", "complete", "partial", "failed"] = "running"
    format: Format
    source: str
    arguments: dict[str, Any]  # every argument of the command, as given
    hashed: dict[str, Any]  # the arguments a re-run must repeat, plus the phrasing file's hash
    sources: dict[str, SourceFingerprint]  # absolute path -> fingerprint
    started_at: str
    updated_at: str
    finished_at: str | None = None
    records: int = 0
    samples_written: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    examples: dict[str, list[SkipExample]] = Field(default_factory=dict)
    shards: dict[str, ShardSummary] = Field(default_factory=dict)
    failed: dict[str, str] = Field(default_factory=dict)  # shard -> error
    error: str | None = None
