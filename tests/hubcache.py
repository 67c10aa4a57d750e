"""A Hugging Face hub cache made on disk, in the layout `huggingface_hub` itself writes, so
offline resolution and loading (`HF_HUB_OFFLINE=1`) read it as they would a real download:

    HF_HUB_CACHE/models--ORG--NAME/blobs/SHA256          file contents
    HF_HUB_CACHE/models--ORG--NAME/snapshots/COMMIT/...  relative symlinks into blobs/
    HF_HUB_CACHE/models--ORG--NAME/refs/main             the commit `main` points at
"""

import hashlib
import os
import shutil
from pathlib import Path


def fake_commit(*parts: str) -> str:
    """A stable 40-hex commit id, so a test can rebuild the same cache anywhere."""
    return hashlib.sha1("/".join(parts).encode()).hexdigest()


def add_snapshot(cache: Path, repo: str, source: Path, commit: str, ref: str = "main") -> Path:
    """Copy the files of `source` (a model folder) into the cache as `repo` at `commit`, and
    point `ref` at it; returns the snapshot folder."""
    repo_dir = Path(cache) / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    source = Path(source).resolve()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source)
        data = path.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / ref).write_text(commit)
    return snapshot
