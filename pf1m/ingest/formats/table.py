"""`jsonl` and `csv`: a user's own table, one sample a line or row, mapped by `--column
FIELD=COLUMN` (instruction, response, task, key) and `--column image=COLUMN` once per image in
order (two for change captions). A JSONL image column may also hold a list of paths.
Lines are read one at a time; a line that is not UTF-8 JSON is skipped and counted. CSV is
read as UTF-8, an undecodable byte replaced.
"""

import csv
import json
from collections.abc import Iterator
from typing import Any

from pf1m.ingest.formats.common import SourceError, sanitize_key
from pf1m.schemas.ingest import (
    ImageRef,
    IngestPhrasing,
    IngestRequest,
    Skip,
    SkipReason,
    SourceRecord,
)

Item = SourceRecord | Skip


def _cell(row: dict, column: str) -> str:
    value = row.get(column)
    return value if isinstance(value, str) else "" if value is None else str(value)


def _images(row: dict, columns: list[str]) -> list[ImageRef]:
    refs: list[ImageRef] = []
    for column in columns:
        value: Any = row.get(column)
        values = value if isinstance(value, list) else [value]
        refs += [ImageRef(str(v)) for v in values if v not in (None, "")]
    return refs


def _record(req: IngestRequest, row: dict, index: int) -> Item:
    cols = req.columns
    key = sanitize_key(_cell(row, cols["key"])) if "key" in cols else f"row{index:08d}"
    if not key:
        return Skip(f"row{index:08d}", SkipReason.BAD_RECORD, f"row {index}: empty key")
    task = _cell(row, cols["task"]).strip() if "task" in cols else str(req.task)
    return SourceRecord(
        key=key,
        instruction=_cell(row, cols["instruction"]),
        response=_cell(row, cols["response"]),
        task=task,
        images=_images(row, req.image_columns),
        meta={"row": index},
    )


def read_jsonl(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    return _jsonl(req)


def _jsonl(req: IngestRequest) -> Iterator[Item]:
    with open(req.src[0], "rb") as f:
        for index, line in enumerate(f):
            if not line.strip():
                continue
            try:
                row = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                yield Skip(f"row{index:08d}", SkipReason.BAD_RECORD, f"line {index + 1}: {exc}")
                continue
            if not isinstance(row, dict):
                detail = f"line {index + 1}: not a JSON object"
                yield Skip(f"row{index:08d}", SkipReason.BAD_RECORD, detail)
                continue
            yield _record(req, row, index)


def read_csv(req: IngestRequest, ph: IngestPhrasing) -> Iterator[Item]:
    with open(req.src[0], encoding="utf-8", errors="replace", newline="") as f:
        header = next(csv.reader(f), [])
    wanted = [*req.columns.values(), *req.image_columns]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise SourceError(f"{req.src[0]}: no column(s) {missing} in the header {header}")
    return _csv(req)


def _csv(req: IngestRequest) -> Iterator[Item]:
    with open(req.src[0], encoding="utf-8", errors="replace", newline="") as f:
        for index, row in enumerate(csv.DictReader(f)):
            yield _record(req, row, index)
