"""The input sample contract: what `KEY.json` in a WebDataset shard must hold."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Task = Literal[
    "caption",
    "region_caption",
    "classification",
    "change_caption",
    "vqa",
    "vqa_rationale",
    "text",
]
TASKS: tuple[str, ...] = Task.__args__  # type: ignore[attr-defined]
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
IMAGE_MARKER = "<image>"


class InputSample(BaseModel):
    """Validated `KEY.json`. `response` is the raw annotation the rewriter revises."""

    model_config = ConfigDict(extra="forbid", strict=True)

    instruction: str = Field(min_length=1)
    response: str = Field(min_length=1)
    task: Task
    source: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("instruction", "response")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    def needs_image(self) -> bool:
        return self.task != "text"
