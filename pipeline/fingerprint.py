"""A model's weight fingerprint, for the config hash: a different checkpoint is a different run.

For a local directory: the names and sizes of every file, and the contents of its small JSON
files (configs, tokenizer settings). Hashing multi-gigabyte weights on every start would cost
minutes; names, sizes and configs change whenever a checkpoint does in practice. A hub id is
resolved to its cached snapshot when one exists, else fingerprinted by name alone.
LoRA adapters are small and often retrained at the same shape, so theirs covers every byte.
"""

import hashlib
from pathlib import Path

SMALL_FILE_BYTES = 1 << 20


def _dir_fingerprint(root: Path, contents: bool) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts):
        rel = path.relative_to(root).as_posix()
        size = path.stat().st_size
        digest.update(f"{rel}\0{size}\0".encode())
        if contents or (path.suffix == ".json" and size <= SMALL_FILE_BYTES):
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:16]


def model_fingerprint(model: str, contents: bool = False) -> str:
    """`contents`: hash every byte (adapters), not just names, sizes and JSON configs."""
    local = Path(model.removeprefix("local-dir:")).expanduser()
    if local.is_dir():
        return "dir:" + _dir_fingerprint(local, contents)
    try:
        from huggingface_hub import snapshot_download

        snapshot = snapshot_download(model, local_files_only=True)
        return f"hub:{model}@{Path(snapshot).name}"
    except Exception:  # not cached here (e.g. a cluster node will fetch it): name only
        return f"hub:{model}"
