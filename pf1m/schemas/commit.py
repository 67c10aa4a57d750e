"""The per-shard commit marker OUT/_commits/SHARD.json: written last, its presence is the commit."""

from pydantic import BaseModel

COMMIT_VERSION = "1"


class InputFingerprint(BaseModel):
    """(url, size, mtime or ETag) from fsspec: a changed input shard gets redone."""

    url: str
    size: int
    mtime: str | None = None
    etag: str | None = None


class FileEntry(BaseModel):
    path: str  # relative to OUT
    rows: int | None = None  # None for the stats JSON
    bytes: int
    sha256: str


class CommitMarker(BaseModel):
    version: str = COMMIT_VERSION
    shard: str
    run_id: str
    input: InputFingerprint
    config_hash: str
    samples_in: int
    files: dict[str, FileEntry]  # keys: data, rejected, quarantine, stats
    committed_at: str
