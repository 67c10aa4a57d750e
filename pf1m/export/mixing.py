"""`pf1m mix`: stage manifests for the U-shaped schedule (PAPER.md, "After PF-1M"). Each stage
takes a fraction of each named input (stage 1: text-only sets + LLaVA + 10% of PF-1M; stage 2:
all of PF-1M) and interleaves them at random, deterministic under the seed.

Streaming: an input is read twice as a stream of ids (count, then select), never held. Each
stage takes exactly round(fraction x samples) of an input by selection sampling (Knuth's
Algorithm S: each sample is taken with probability needed / left), and the inputs are
interleaved by drawing the next row from input i with probability (its rows left) / (all rows
left), so every interleaving is equally likely and any prefix of a stage holds each input in
about its overall share.
"""

import json
import posixpath
import random
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from pf1m.export.jsonstream import iter_json_records
from pf1m.pipeline.commit import now_iso, write_atomic
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError
from pf1m.schemas.export import (
    EXPORT_MANIFEST,
    MIX_MANIFEST,
    ExportManifest,
    MixInput,
    MixManifest,
    MixSettings,
    MixStage,
    MixTake,
)


def _files(fs, path: str) -> list[str]:
    if fs.isdir(path):
        mpath = posixpath.join(path, EXPORT_MANIFEST)
        if not fs.exists(mpath):
            raise ConfigError(f"{path}: a folder without {EXPORT_MANIFEST} (name its files)")
        with fs.open(mpath, "rb") as f:
            manifest = ExportManifest.model_validate_json(f.read())
        if manifest.format == "webdataset":
            raise ConfigError(f"{path}: webdataset exports are streamed, not mixed by id")
        return [posixpath.join(path, f.path) for f in manifest.files]
    if not fs.isfile(path):
        raise ConfigError(f"{path}: no such file or folder")
    return [path]


def _record_id(record: Any, index: int) -> str:
    if isinstance(record, dict):
        if isinstance(record.get("id"), (str, int)):
            return str(record["id"])
        extra = record.get("pf1m")
        if isinstance(extra, dict) and isinstance(extra.get("uid"), str):
            return extra["uid"]
    return str(index)


def iter_ids(path: str) -> Iterator[tuple[str, int, str]]:
    """(file, index in file, id) of every record of an input: a JSON array or JSON lines file,
    or a pf1m export folder (pf1m-json, llava, hf)."""
    fs, root = url_to_fs(path)
    for file in _files(fs, root):
        with fs.open(file, "rb") as f:
            if file.endswith(".parquet"):
                parquet = pq.ParquetFile(f)
                index = 0
                for i in range(parquet.num_row_groups):
                    for rid in parquet.read_row_group(i, columns=["id"]).column(0).to_pylist():
                        yield file, index, str(rid)
                        index += 1
            else:
                for index, record in enumerate(iter_json_records(f)):
                    yield file, index, _record_id(record, index)


def select(available: int, take: int, rng: random.Random) -> Iterator[bool]:
    """Algorithm S: `available` decisions, exactly `take` of them True, uniformly at random."""
    needed = take
    for left in range(available, 0, -1):
        chosen = rng.random() * left < needed
        needed -= chosen
        yield chosen


def _taken(path: str, available: int, take: int, rng: random.Random):
    picks = select(available, take, rng)
    for (file, index, rid), chosen in zip(iter_ids(path), picks, strict=True):
        if chosen:
            yield file, index, rid


def stage_rows(
    inputs: dict[str, str],
    counts: dict[str, int],
    fractions: dict[str, float],
    seed: int,
    stage: str,
) -> Iterator[dict[str, Any]]:
    """The rows of one stage, interleaved: {input, file, index, id}."""
    takes = {name: round(f * counts[name]) for name, f in fractions.items()}
    streams = {
        name: _taken(
            inputs[name], counts[name], takes[name], random.Random(f"{seed}:{stage}:{name}")
        )
        for name in fractions
    }
    left = dict(takes)
    rng = random.Random(f"{seed}:{stage}:interleave")
    names = sorted(left)
    total = sum(left.values())
    while total:
        r = rng.random() * total
        for name in names:
            if r < left[name]:
                break
            r -= left[name]
        file, index, rid = next(streams[name])
        left[name] -= 1
        total -= 1
        yield {"input": name, "file": file, "index": index, "id": rid}


def mix(inputs: dict[str, str], dest: str, settings: MixSettings, seed: int) -> MixManifest:
    """Count every input, write one JSON-lines file per stage and DIR/mix.json (last)."""
    needed = {name for stage in settings.stages.values() for name in stage}
    missing = sorted(needed - set(inputs))
    if missing:
        raise ConfigError(f"mix: no --input for {', '.join(missing)} (the stages use them)")
    counts: dict[str, int] = {}
    described: dict[str, MixInput] = {}
    for name in sorted(needed):
        per_file: dict[str, int] = {}
        for file, _, _ in iter_ids(inputs[name]):
            per_file[file] = per_file.get(file, 0) + 1
        counts[name] = sum(per_file.values())
        described[name] = MixInput(
            path=inputs[name], available=counts[name], file_records=list(per_file.items())
        )
    dfs, droot = url_to_fs(dest)
    dfs.makedirs(droot, exist_ok=True)
    stages: dict[str, MixStage] = {}
    for stage, fractions in settings.stages.items():
        rel = f"{stage}.jsonl"
        taken = dict.fromkeys(fractions, 0)
        rows = 0
        with dfs.open(posixpath.join(droot, rel), "wb") as f:
            for row in stage_rows(inputs, counts, fractions, seed, stage):
                f.write((json.dumps(row) + "\n").encode())
                taken[row["input"]] += 1
                rows += 1
        stages[stage] = MixStage(
            file=rel,
            rows=rows,
            inputs={
                name: MixTake(
                    fraction=fractions[name],
                    taken=taken[name],
                    achieved=taken[name] / counts[name] if counts[name] else 0.0,
                    share=taken[name] / rows if rows else 0.0,
                )
                for name in fractions
            },
            notes=settings.notes.get(stage, {}),
        )
    manifest = MixManifest(
        seed=seed,
        tolerance=settings.tolerance,
        inputs=described,
        stages=stages,
        generated_at=now_iso(),
    )
    write_atomic(
        dfs, posixpath.join(droot, MIX_MANIFEST), manifest.model_dump_json(indent=1).encode()
    )
    return manifest
