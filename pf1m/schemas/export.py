"""Record shapes of `pf1m export`, `pf1m import-pf1m` and `pf1m mix`: the released PF-1M record
(PAPER.md, "Published PF-1M record fields") with this project's extra `pf1m` object, the
conversation every trainer format is built from, the manifest of an export, the manifest of a
stage mixture, and the export settings file (`pf1m/configs/export.yaml`).
"""

import json
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pf1m.schemas.config import ConfigError
from pf1m.schemas.rows import IMAGE_TYPE, _hf_feature
from pf1m.schemas.sample import TASKS, Task

EXPORT_VERSION = "1"
MIX_VERSION = "1"
EXPORT_MANIFEST = "export.json"
MIX_MANIFEST = "mix.json"
FORMATS: tuple[str, ...] = ("pf1m-json", "llava", "hf", "webdataset")
Format = Literal["pf1m-json", "llava", "hf", "webdataset"]
# The released layout marks each image inside `input` as <img_path>PATH<img_path>.
IMG_PATH = "<img_path>"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- the released PF-1M record


class Pf1mExtra(_Strict):
    """What the published fields cannot carry; readers of the released layout ignore it."""

    uid: str
    shard: str
    key: str
    source: str | None = None
    task: Task
    rewrite_raw: str | None = None
    # One flag per paragraph of `rewrite_raw`, in order: kept in `output` (True) or removed
    # (False); the scores come, in that order, from paragraph_clip_scores / filtered_paragraphs.
    paragraph_kept: list[bool] | None = None
    nli_label: str | None = None
    reward_original: float | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    reasoning: str | None = None  # row schema 3 (thinking rewriters); absent before
    image_names: list[str | None] = Field(default_factory=list)  # the rows' `images[].path`
    markers_added: bool = False  # the instruction had no <image> markers; `input` added them
    run_id: str | None = None  # the run the row came from


class Pf1mRecord(_Strict):
    """One released PF-1M record. A field the paper omits for a task is absent, never null
    (which fields a task has: `ExportConfig.published`)."""

    input: str
    output: str
    original: str
    rouge_score: float | None = None
    sts_similarity: float | None = None  # captioning
    nli_similarity: list[float] | None = None  # VQA: logits (contradiction, entailment, neutral)
    filtered_paragraphs: list[tuple[float, str]] | None = None  # removed: [score, text]
    # Kept paragraphs' scores, in `output` order (the released file may also hold [score, text])
    paragraph_clip_scores: list[float | tuple[float, str]] | None = None
    reward: float | None = None
    pf1m: Pf1mExtra | None = None


SCORE_FIELDS: tuple[str, ...] = (
    "rouge_score",
    "sts_similarity",
    "nli_similarity",
    "filtered_paragraphs",
    "paragraph_clip_scores",
    "reward",
)


# ---------------------------------------------------------------- conversations (trainers)


class Turn(_Strict):
    """LLaVA's turn: `from` human or gpt. `loss` marks the turns a trainer trains on."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    speaker: Literal["human", "gpt"] = Field(alias="from")
    value: str
    loss: bool


class Conversation(_Strict):
    """One or more kept samples as one conversation (the paper's multi-turn augmentation).

    `text` is the conversation rendered with `ExportConfig.conversation`; `assistant_spans`
    are [start, end) character offsets of each assistant turn's value inside `text`, so a
    trainer with its own template can still mask the loss to them (offsets map to tokens)."""

    id: str
    uids: list[str]
    sources: list[str | None]
    tasks: list[str]
    images: list[str]  # relative paths under the export (or member names in a tar)
    turns: list[Turn]
    text: str
    assistant_spans: list[tuple[int, int]]
    tokens: int | None = None  # counted with --tokenizer (images as --image-tokens each)
    over_budget: bool = False  # one sample alone exceeds the budget: its own conversation


TURN_TYPE = pa.struct([("from", pa.string()), ("value", pa.string()), ("loss", pa.bool_())])
_HF_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("uids", pa.list_(pa.string())),
    pa.field("sources", pa.list_(pa.string())),
    pa.field("tasks", pa.list_(pa.string())),
    pa.field("images", pa.list_(IMAGE_TYPE)),
    pa.field("conversations", pa.list_(TURN_TYPE)),
    pa.field("text", pa.string()),
    pa.field("assistant_spans", pa.list_(pa.list_(pa.int32()))),
    pa.field("tokens", pa.int32()),
    pa.field("over_budget", pa.bool_()),
]
# The `hf` format's table: one conversation a row, images embedded; the `datasets` features in
# the metadata make `load_dataset` decode `images` as images (same encoding as schemas/rows.py).
HF_SCHEMA = pa.schema(
    _HF_FIELDS,
    metadata={
        b"pf1m.schema": b"export-hf",
        b"pf1m.schema_version": EXPORT_VERSION.encode(),
        b"huggingface": json.dumps(
            {"info": {"features": {f.name: _hf_feature(f.type) for f in _HF_FIELDS}}}
        ).encode(),
    },
)


# ---------------------------------------------------------------- manifests


class ExportFile(_Strict):
    path: str  # relative to DEST
    records: int


class MultiTurn(_Strict):
    k: int
    tokenizer: str
    image_tokens: int
    max_tokens: int
    seed: int
    window: int
    conversations: int = 0
    over_budget: int = 0  # samples that alone exceed max_tokens (each its own conversation)


class ExportManifest(_Strict):
    """DEST/export.json, written last: what was exported from which run."""

    version: str = EXPORT_VERSION
    format: Format
    source: str  # the run directory exported
    source_run_id: str
    source_config_hash: str
    run: dict[str, Any]  # the source's run.json as read (config, hash view, revisions, ...)
    shards: list[str]  # committed, verified shards exported
    skipped: list[str] = Field(default_factory=list)  # committed but failed verification
    problems: list[str] = Field(default_factory=list)
    complete: bool  # every planned shard committed and verified
    samples: int = 0  # kept rows exported
    records: int = 0  # records written (conversations when packed)
    images: int = 0
    files: list[ExportFile] = Field(default_factory=list)
    multi_turn: MultiTurn | None = None
    card: str | None = None  # the dataset card's path (hf)
    exported_at: str
    versions: dict[str, str] = Field(default_factory=dict)


class MixInput(_Strict):
    path: str
    available: int  # samples the input holds
    file_records: list[tuple[str, int]] = Field(default_factory=list)  # (file, records)


class MixTake(_Strict):
    fraction: float  # share of the input's samples the stage takes (config)
    taken: int
    achieved: float  # taken / available
    share: float  # taken / the stage's rows


class MixStage(_Strict):
    file: str  # relative to the mix folder: JSON lines {input, file, index, id}
    rows: int
    inputs: dict[str, MixTake]
    notes: dict[str, Any] = Field(default_factory=dict)  # what trains, context, LR scale


class MixManifest(_Strict):
    """DIR/mix.json: stage manifests for the U-shaped schedule (PAPER.md, "After PF-1M")."""

    version: str = MIX_VERSION
    seed: int
    tolerance: float
    inputs: dict[str, MixInput]
    stages: dict[str, MixStage]
    generated_at: str


# ----------------------------------------------------------- settings (pf1m/configs/export.yaml)


class Published(_Strict):
    """Which released fields each task's records carry (PAPER.md)."""

    required: list[str]  # always present
    optional: list[str]  # present when the row has the score
    tasks: dict[Task, list[str]]  # the task's score fields beyond `optional`

    def allowed(self, task: str) -> set[str]:
        return {*self.required, *self.optional, *self.tasks.get(task, [])}

    @model_validator(mode="after")
    def _known(self) -> "Published":
        known = set(Pf1mRecord.model_fields) - {"pf1m"}
        used = {*self.required, *self.optional, *(f for v in self.tasks.values() for f in v)}
        if used - known:
            raise ValueError(f"unknown record fields: {', '.join(sorted(used - known))}")
        return self


class ConversationStyle(_Strict):
    """How `text` is rendered; `{text}` is the turn's value."""

    system: str = ""
    human: str
    gpt: str
    image_marker: str = "<image>"

    @model_validator(mode="after")
    def _placeholders(self) -> "ConversationStyle":
        for name in ("human", "gpt"):
            if getattr(self, name).count("{text}") != 1:
                raise ValueError(f"{name} must contain {{text}} exactly once")
        return self


class Packing(_Strict):
    max_tokens: int = Field(gt=0)  # the trainer's context (paper stage 1: 1024)
    window: int = Field(gt=0)  # samples shuffled together: memory bound of packing
    seed: int = 0


class Licences(_Strict):
    """What the run cannot know: the licence of each source and of the rewriter."""

    sources: dict[str, str] = Field(default_factory=dict)
    unknown_source: str
    rewriter_by_backend: dict[str, str] = Field(default_factory=dict)
    rewriter_by_model: dict[str, str] = Field(default_factory=dict)  # substring of the model id
    unknown_rewriter: str


class Card(_Strict):
    pretty_name: str
    language: list[str]
    task_categories: list[str]
    licence: str  # the card's `license:` (the dataset as a whole)
    description: str
    caveats: str


class ImportSettings(_Strict):
    shard_size: int = Field(gt=0)
    preset: str  # the config the released file is imported under (relative to pf1m/configs/)
    overrides: list[str] = Field(default_factory=list)  # --set items for that preset


class MixSettings(_Strict):
    tolerance: float = Field(gt=0.0, lt=1.0)
    stages: dict[str, dict[str, float]]  # stage -> input name -> fraction taken
    notes: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fractions(self) -> "MixSettings":
        for stage, inputs in self.stages.items():
            for name, f in inputs.items():
                if not 0.0 < f <= 1.0:
                    raise ValueError(f"stages.{stage}.{name}: fraction {f} not in (0, 1]")
        return self


class ExportConfig(_Strict):
    published: Published
    image_dir: str = "images"
    shard_size: dict[Format, int | None]  # records per output file; None: one file
    row_group_size: int = Field(default=256, gt=0)  # hf Parquet row groups
    conversation: ConversationStyle
    packing: Packing
    card: Card
    licences: Licences
    import_: ImportSettings = Field(alias="import")
    mix: MixSettings

    @model_validator(mode="after")
    def _every_task(self) -> "ExportConfig":
        missing = [t for t in TASKS if t not in self.published.tasks]
        if missing:
            raise ValueError(f"published.tasks: no entry for {', '.join(missing)}")
        return self


def load_export_config(path: str | Path) -> ExportConfig:
    """Read and validate the export settings, or raise ConfigError naming the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read export config ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return ExportConfig.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise ConfigError(f"{path}: invalid export config:\n" + "\n".join(lines)) from None
