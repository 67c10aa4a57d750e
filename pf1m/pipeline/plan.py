"""Shard planning: expand input patterns into named shards, one unit of work each.

A shard's name is its path relative to its pattern's fixed root, without `.tar` (`coco/00000`).
Brace patterns (`{a,b}`, `{00000..00099}`), globs and fsspec URLs are accepted.
"""

import posixpath
import re
from dataclasses import dataclass

from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.commit import InputFingerprint
from pf1m.schemas.config import InputEntry

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
_WILD = re.compile(r"[*?\[{]")


class PlanError(ValueError):
    """The inputs cannot be planned (no shards, duplicate names, bad pattern)."""


@dataclass(frozen=True)
class ShardJob:
    shard: str
    url: str  # with protocol, readable by pf1m.pipeline.storage.open_url
    source: str | None


def expand_braces(pattern: str) -> list[str]:
    """`a{1..3}b` -> a1b a2b a3b (zero padding kept); `{x,y}` -> x y; nested left to right."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    rng = _RANGE.match(body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [p for opt in options for p in expand_braces(head + opt + tail)]


def fixed_root(path: str) -> str:
    """The directory part of a pattern before its first wildcard or brace."""
    wild = _WILD.search(path)
    prefix = path if wild is None else path[: wild.start()]
    return posixpath.dirname(prefix) if (wild or not prefix.endswith("/")) else prefix.rstrip("/")


def shard_name(path: str, root: str) -> str:
    rel = posixpath.relpath(path, root) if root else path.lstrip("/")
    return rel[: -len(".tar")] if rel.endswith(".tar") else rel


def plan_entry(entry: InputEntry) -> list[ShardJob]:
    fs, path = url_to_fs(entry.pattern)
    root = fixed_root(path)
    jobs = []
    for expanded in expand_braces(path):
        if _WILD.search(expanded):
            matches = sorted(fs.glob(expanded))
            if not matches:
                raise PlanError(f"input pattern {entry.pattern!r} matches no file")
        else:
            matches = [expanded]  # a missing file fails its shard, by name, at run time
        for match in matches:
            jobs.append(ShardJob(shard_name(match, root), fs.unstrip_protocol(match), entry.source))
    return jobs


def plan_shards(entries: list[InputEntry]) -> list[ShardJob]:
    jobs = [job for entry in entries for job in plan_entry(entry)]
    if not jobs:
        raise PlanError("the inputs name no shard")
    seen: dict[str, str] = {}
    for job in jobs:
        if job.shard in seen:
            raise PlanError(f"duplicate shard name {job.shard!r}: {seen[job.shard]} and {job.url}")
        seen[job.shard] = job.url
    return sorted(jobs, key=lambda j: j.shard)


def input_fingerprint(url: str) -> InputFingerprint:
    """(url, size, mtime or ETag) as fsspec reports it; raises OSError if unreadable."""
    fs, path = url_to_fs(url)
    info = fs.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    etag = info.get("ETag") or info.get("etag")
    return InputFingerprint(
        url=url,
        size=int(info.get("size") or 0),
        mtime=str(mtime) if mtime is not None else None,
        etag=str(etag).strip('"') if etag else None,
    )
