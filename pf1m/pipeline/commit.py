"""Per-shard commit (DESIGN.md "Commit and resume").

Each output file is written under a temporary name (never ending in `.parquet`), checksummed and
renamed into place; the marker `_commits/SHARD.json` comes last, and on object stores writing it
is the commit. A shard is done when its marker matches the input fingerprint and config hash.
"""

import hashlib
import posixpath
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from fsspec import AbstractFileSystem

from pf1m.schemas.commit import CommitMarker, FileEntry, InputFingerprint

KINDS: dict[str, tuple[str, str]] = {  # kind -> (folder, extension)
    "data": ("data", ".parquet"),
    "rejected": ("rejected", ".parquet"),
    "quarantine": ("quarantine", ".parquet"),
    "stats": ("stats", ".json"),
}
MARKER_DIR = "_commits"
TMP_TAG = ".tmp-"


def relpath(kind: str, shard: str) -> str:
    folder, ext = KINDS[kind]
    return f"{folder}/{shard}{ext}"


def marker_relpath(shard: str) -> str:
    return f"{MARKER_DIR}/{shard}.json"


def tmp_path(final: str) -> str:
    """A temporary sibling of `final`; its name never ends in `.parquet`."""
    return f"{final}{TMP_TAG}{uuid.uuid4().hex[:12]}"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sha256_of(fs: AbstractFileSystem, path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_atomic(fs: AbstractFileSystem, final: str, payload: bytes) -> None:
    fs.makedirs(posixpath.dirname(final), exist_ok=True)
    tmp = tmp_path(final)
    with fs.open(tmp, "wb") as f:
        f.write(payload)
    fs.mv(tmp, final)


def commit_shard(
    fs: AbstractFileSystem,
    root: str,
    shard: str,
    written: dict[str, FileEntry],
    *,
    run_id: str,
    fingerprint: InputFingerprint,
    config_hash: str,
    samples_in: int,
    on_step: Callable[[str], None] = lambda step: None,
) -> CommitMarker:
    """Rename each temporary (kind -> its entry, checksummed as it was written: pipeline/writer.py)
    into place, then write the marker. `on_step` is called at `before_commit`, `inside_commit`
    and `after_commit` (fault points)."""
    on_step("before_commit")
    entries: dict[str, FileEntry] = {}
    for kind, entry in written.items():
        rel = relpath(kind, shard)
        final = posixpath.join(root, rel)
        fs.makedirs(posixpath.dirname(final), exist_ok=True)
        fs.mv(entry.path, final)
        entries[kind] = entry.model_copy(update={"path": rel})
    on_step("inside_commit")
    marker = CommitMarker(
        shard=shard,
        run_id=run_id,
        input=fingerprint,
        config_hash=config_hash,
        samples_in=samples_in,
        files=entries,
        committed_at=now_iso(),
    )
    write_atomic(
        fs, posixpath.join(root, marker_relpath(shard)), marker.model_dump_json(indent=1).encode()
    )
    on_step("after_commit")
    return marker


def read_marker(fs: AbstractFileSystem, root: str, shard: str) -> CommitMarker | None:
    path = posixpath.join(root, marker_relpath(shard))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return CommitMarker.model_validate_json(f.read())


def is_done(marker: CommitMarker | None, fingerprint: InputFingerprint, config_hash: str) -> bool:
    return marker is not None and marker.input == fingerprint and marker.config_hash == config_hash


def clean_shard(fs: AbstractFileSystem, root: str, shard: str) -> list[str]:
    """Before (re)doing a shard: drop its marker, any half-committed files and temporaries."""
    removed = []
    finals = [relpath(kind, shard) for kind in KINDS] + [marker_relpath(shard)]
    for rel in finals:
        final = posixpath.join(root, rel)
        candidates = fs.glob(final + TMP_TAG + "*") + ([final] if fs.exists(final) else [])
        for path in candidates:
            fs.rm(path)
            removed.append(path)
    return removed


def sweep_temporaries(fs: AbstractFileSystem, root: str) -> list[str]:
    """Remove every temporary under OUT left by an interrupted run (call with the lock held)."""
    patterns = [posixpath.join(root, f"*{TMP_TAG}*")]
    for folder in [f for f, _ in KINDS.values()] + [MARKER_DIR]:
        patterns.append(posixpath.join(root, folder, "**", f"*{TMP_TAG}*"))
    removed = sorted({path for pattern in patterns for path in fs.glob(pattern)})
    for path in removed:
        fs.rm(path)
    return removed


def verify(fs: AbstractFileSystem, root: str, marker: CommitMarker) -> list[str]:
    """Problems with a committed shard's files: missing, resized, or checksum mismatch."""
    problems = []
    for kind, entry in marker.files.items():
        path = posixpath.join(root, entry.path)
        if not fs.exists(path):
            problems.append(f"{marker.shard}: {kind} file {entry.path} is missing")
            continue
        digest, size = sha256_of(fs, path)
        if (digest, size) != (entry.sha256, entry.bytes):
            problems.append(f"{marker.shard}: {kind} file {entry.path} does not match its checksum")
    return problems
