"""Write one input shard from a chunk of source records and commit it like a run's shard: the
tar goes to a temporary name, is checksummed and renamed into place, and its marker
`DIR/_commits/SHARD.json` (counts, skips) comes last. A shard whose marker and tar are in place
is done and skipped on a re-run.

The tar's bytes depend only on the chunk: members in record order, mtime 0, uid/gid 0, no user
names, GNU format, so the same chunk written by any worker gives the same file. Every sample is
validated as an `InputSample` with its `<image>` count before it is written, so the pipeline's
reader accepts whatever lands here.
"""

import io
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from fsspec import AbstractFileSystem
from pydantic import ValidationError

from pf1m.ingest.images import ImageProblem, load
from pf1m.pipeline import faults
from pf1m.pipeline.commit import marker_relpath, now_iso, tmp_path, write_atomic
from pf1m.pipeline.prompt import ImageCountMismatch, place_images
from pf1m.pipeline.storage import url_to_fs
from pf1m.pipeline.writer import HashingFile
from pf1m.schemas.ingest import (
    RegionPhrasing,
    ShardMarker,
    Skip,
    SkipExample,
    SkipReason,
    SourceRecord,
)
from pf1m.schemas.sample import IMAGE_MARKER, InputSample

MEMBER_MODE = 0o644


@dataclass
class Chunk:
    """`shard_size` consecutive items of a reader's stream; chunk k becomes shard k."""

    index: int
    items: list[SourceRecord | Skip]

    @property
    def name(self) -> str:
        return shard_name(self.index)


@dataclass(frozen=True)
class ShardContext:
    """What a shard task needs besides its chunk (the same for every shard of an ingest)."""

    out: str
    images: str  # --images, resolved
    source: str
    region: RegionPhrasing
    reencode: bool
    examples_per_reason: int
    driver_pid: int  # fault points kill the driver's process group


@dataclass
class Tally:
    """Skip counts per reason and the first few examples of each."""

    cap: int
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[SkipExample]] = field(default_factory=dict)

    def add(self, reason: SkipReason, key: str, detail: str, count: int = 1) -> None:
        self.counts[reason.value] = self.counts.get(reason.value, 0) + count
        shown = self.examples.setdefault(reason.value, [])
        if len(shown) < self.cap:
            shown.append(SkipExample(key=key, detail=detail))


def shard_name(index: int) -> str:
    return f"{index:05d}"


def shard_relpath(name: str) -> str:
    return f"{name}.tar"


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0
    info.mode = MEMBER_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(payload))


def build_sample(
    rec: SourceRecord, ctx: ShardContext, root: Path
) -> tuple[bytes, list[tuple[str, bytes]]] | Skip:
    """(KEY.json bytes, [(extension, image bytes)]) for a record, or why it is skipped."""
    try:
        sample = InputSample(
            instruction=rec.instruction,
            response=rec.response,
            task=rec.task,  # type: ignore[arg-type]  # validated here
            source=ctx.source,
            meta=rec.meta,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        return Skip(rec.key, SkipReason.BAD_RECORD, f"{where}: {err['msg']}")
    if sample.needs_image() and not rec.images:
        return Skip(rec.key, SkipReason.BAD_RECORD, f"task {sample.task} needs an image")
    if not sample.needs_image() and (rec.images or IMAGE_MARKER in sample.instruction):
        return Skip(rec.key, SkipReason.BAD_RECORD, "a text sample carries no image")
    try:
        place_images(sample.instruction, len(rec.images), IMAGE_MARKER)
    except ImageCountMismatch as exc:
        return Skip(rec.key, SkipReason.BAD_RECORD, str(exc))
    try:
        images = [load(root, ref, ctx.region, ctx.reencode) for ref in rec.images]
    except ImageProblem as problem:
        return Skip(rec.key, problem.reason, problem.detail)
    payload = json.dumps(sample.model_dump(), sort_keys=True, ensure_ascii=False).encode()
    return payload, images


def write_shard(chunk: Chunk, ctx: ShardContext) -> ShardMarker:
    """Write, commit and mark one shard; returns its marker. Runs in-process or as a Ray task."""
    fs, root = url_to_fs(ctx.out)
    images_root = Path(ctx.images)
    tally = Tally(ctx.examples_per_reason)
    final = posixpath.join(root, shard_relpath(chunk.name))
    tmp = tmp_path(final)
    samples = records = 0
    written: set[str] = set()
    f = HashingFile(fs.open(tmp, "wb"))  # checksummed as written: the commit reads nothing back
    with f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for item in chunk.items:
            records += item.count if isinstance(item, Skip) else 1
            built = item if isinstance(item, Skip) else build_sample(item, ctx, images_root)
            if isinstance(built, Skip):
                tally.add(built.reason, built.key, built.detail, built.count)
                continue
            assert isinstance(item, SourceRecord)
            if item.key in written:
                tally.add(SkipReason.DUPLICATE_KEY, item.key, "key already in this shard")
                continue
            payload, images = built
            _add(tar, f"{item.key}.json", payload)
            for i, (ext, data) in enumerate(images):
                name = f"{item.key}.{ext}" if len(images) == 1 else f"{item.key}.{i}.{ext}"
                _add(tar, name, data)
            written.add(item.key)
            samples += 1
    tarball = (tmp, f.sha256(), f.size)
    return _commit(fs, root, chunk.name, tarball, final, samples, records, tally, ctx.driver_pid)


def _commit(
    fs: AbstractFileSystem, root: str, name: str, tarball: tuple[str, str, int], final: str,
    samples: int, records: int, tally: Tally, driver_pid: int,
) -> ShardMarker:  # fmt: skip
    faults.kill_point("before_commit", name, driver_pid)
    tmp = tarball[0]
    digest, size, rel = None, 0, None
    if samples:
        _, digest, size = tarball
        fs.mv(tmp, final)
        rel = shard_relpath(name)
    else:  # every record skipped: no tar, the marker alone says so
        fs.rm(tmp)
        if fs.exists(final):
            fs.rm(final)
    faults.kill_point("inside_commit", name, driver_pid)
    marker = ShardMarker(
        shard=name,
        file=rel,
        bytes=size,
        sha256=digest,
        records=records,
        samples=samples,
        skipped=dict(sorted(tally.counts.items())),
        examples=dict(sorted(tally.examples.items())),
        committed_at=now_iso(),
    )
    payload = marker.model_dump_json(indent=1).encode()
    write_atomic(fs, posixpath.join(root, marker_relpath(name)), payload)
    faults.kill_point("after_commit", name, driver_pid)
    return marker


def committed(fs: AbstractFileSystem, root: str, name: str) -> ShardMarker | None:
    """The marker of a finished shard whose tar is in place at its recorded size, else None."""
    path = posixpath.join(root, marker_relpath(name))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        try:
            marker = ShardMarker.model_validate_json(f.read())
        except ValidationError:
            return None
    if marker.file is None:
        return marker
    tar = posixpath.join(root, marker.file)
    return marker if fs.exists(tar) and fs.size(tar) == marker.bytes else None
