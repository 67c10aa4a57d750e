"""`DIR/ingest.json`: the command's arguments and its sources' fingerprints, compared on every
re-run (a different one is refused with the difference), and the totals merged from the shards'
markers (samples written, skips per reason with capped examples)."""

import hashlib
import json
import posixpath
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from pf1m.ingest.formats.folder import listing
from pf1m.pipeline.commit import now_iso, write_atomic
from pf1m.schemas.config import ConfigError
from pf1m.schemas.ingest import (
    IngestManifest,
    IngestRequest,
    ShardMarker,
    ShardSummary,
    SkipExample,
    SourceFingerprint,
)

MANIFEST = "ingest.json"
READ_BYTES = 1 << 20


def fingerprint_file(path: Path) -> SourceFingerprint:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(READ_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return SourceFingerprint(kind="file", bytes=size, sha256=digest.hexdigest())


def fingerprint_folder(root: Path) -> SourceFingerprint:
    """An image folder's class/file names and sizes (hashing every image would read them all)."""
    digest = hashlib.sha256()
    total = 0
    for folder, files in listing(root).items():
        for name in files:
            size = (root / folder / name).stat().st_size
            digest.update(f"{folder}/{name}\0{size}\0".encode())
            total += size
    return SourceFingerprint(kind="folder", bytes=total, sha256=digest.hexdigest())


def source_files(req: IngestRequest) -> list[str]:
    return [*req.src, *(p for p in (req.instances, req.answers, req.knowledge) if p)]


def fingerprints(req: IngestRequest) -> dict[str, SourceFingerprint]:
    prints = {p: fingerprint_file(Path(p)) for p in source_files(req)}
    if req.format == "image-folder":
        prints[req.images] = fingerprint_folder(Path(req.images))
    return prints


def hashed_view(req: IngestRequest, phrasing_sha256: str) -> dict[str, Any]:
    """What a re-run must repeat: the arguments that shape the shards, the phrasing's bytes."""
    view = req.hashed()
    view.pop("config")
    view["phrasing_sha256"] = phrasing_sha256
    return view


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`field: old -> new` for every flattened field that differs."""
    a, b = _flat(old), _flat(new)
    return [
        f"  {k}: {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


def load(fs: AbstractFileSystem, root: str) -> IngestManifest | None:
    path = posixpath.join(root, MANIFEST)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return IngestManifest.model_validate_json(f.read())


def save(fs: AbstractFileSystem, root: str, manifest: IngestManifest) -> None:
    manifest.updated_at = now_iso()
    write_atomic(fs, posixpath.join(root, MANIFEST), manifest.model_dump_json(indent=1).encode())


def open_manifest(
    fs: AbstractFileSystem,
    root: str,
    req: IngestRequest,
    source: str,
    hashed: dict[str, Any],
    sources: dict[str, Any],
) -> IngestManifest:
    """The manifest of this ingest: a new one, or the one in DIR when it asked the same; a
    different request or changed sources are refused (ConfigError), as is a DIR holding shards
    that no ingest.json accounts for."""
    old = load(fs, root)
    prints = {k: v.model_dump() for k, v in sources.items()}
    if old is None:
        if fs.exists(root) and fs.glob(posixpath.join(root, "*.tar")):
            raise ConfigError(f"{req.out}: holds .tar files but no {MANIFEST}; use an empty DIR")
        now = now_iso()
        return IngestManifest(
            format=req.format,
            source=source,
            arguments=req.model_dump(),
            hashed=hashed,
            sources=sources,
            started_at=now,
            updated_at=now,
        )
    old_prints = {k: v.model_dump() for k, v in old.sources.items()}
    diff = differences(
        {"arguments": old.hashed, "sources": old_prints},
        {"arguments": hashed, "sources": prints},
    )
    if diff:
        raise ConfigError(
            f"{req.out}/{MANIFEST} was written by a different ingest; use another --out or "
            "repeat its arguments. What differs (recorded -> now):\n" + "\n".join(diff)
        )
    old.arguments = req.model_dump()
    old.status, old.finished_at, old.error, old.failed = "running", None, None, {}
    return old


def merge(manifest: IngestManifest, markers: list[ShardMarker], cap: int) -> IngestManifest:
    """Totals over the shards' markers, in shard order (so examples do not depend on timing)."""
    manifest.records = manifest.samples_written = 0
    manifest.skipped, manifest.examples, manifest.shards = {}, {}, {}
    for m in sorted(markers, key=lambda m: m.shard):
        manifest.records += m.records
        manifest.samples_written += m.samples
        for reason, n in m.skipped.items():
            manifest.skipped[reason] = manifest.skipped.get(reason, 0) + n
        for reason, shown in m.examples.items():
            kept: list[SkipExample] = manifest.examples.setdefault(reason, [])
            kept += shown[: max(cap - len(kept), 0)]
        manifest.shards[m.shard] = ShardSummary(
            file=m.file, samples=m.samples, bytes=m.bytes, sha256=m.sha256
        )
    manifest.skipped = dict(sorted(manifest.skipped.items()))
    manifest.examples = dict(sorted(manifest.examples.items()))
    return manifest
