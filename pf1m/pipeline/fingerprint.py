"""A model's weight fingerprint, for the config hash: different weights are a different run.

- A local folder: the names and sizes of every file, and the contents of its small JSON files
  (configs, tokenizer settings). Hashing multi-gigabyte weights on every start would cost
  minutes; names, sizes and configs change whenever a checkpoint does in practice. LoRA
  adapters are small and often retrained at the same shape, so theirs covers every byte.
- A local file (a checkpoint): its name and size.
- A hub repository: `hub:ORG/NAME@COMMIT`, always with the commit the run resolved and loads
  (pf1m/pipeline/revisions.py), whether or not this machine has it cached; one file of a
  repository: `hub:ORG/NAME@COMMIT:FILE`.
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


def model_fingerprint(path: str | Path, contents: bool = False) -> str:
    """A local folder (`dir:...`) or file (`file:NAME:SIZE`); `contents`: hash every byte of
    a folder (adapters), not just names, sizes and JSON configs."""
    local = Path(str(path).removeprefix("local-dir:")).expanduser()
    if local.is_dir():
        return "dir:" + _dir_fingerprint(local, contents)
    if local.is_file():
        return f"file:{local.name}:{local.stat().st_size}"
    raise FileNotFoundError(f"{path}: no such file or folder")


def hub_fingerprint(repo: str, commit: str, filename: str | None = None) -> str:
    """A hub repository at a resolved commit, or one file of it."""
    return f"hub:{repo}@{commit}" + (f":{filename}" if filename else "")
