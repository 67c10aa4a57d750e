"""fsspec URLs for inputs and outputs (local paths, s3://, gs://, ...), with a clear error when
the storage package a URL needs is not installed, and a warning for node-local output paths
on a multi-node cluster. Every storage open in the project goes through here."""

import re

import fsspec
from fsspec import AbstractFileSystem

from pf1m.schemas.config import ConfigError

_PACKAGE = re.compile(r"install (\w[\w-]*)", re.IGNORECASE)


def url_to_fs(url: str) -> tuple[AbstractFileSystem, str]:
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:  # fsspec: "Install s3fs to access S3"
        found = _PACKAGE.search(str(exc))
        package = found.group(1) if found else "the fsspec implementation for this protocol"
        raise ConfigError(
            f"{url}: needs the package {package} (pip install {package} on every node)"
        ) from None


def open_url(url: str, mode: str = "rb"):
    """A file by URL (an input shard, a file under OUT), through `url_to_fs` so that a missing
    storage package is named."""
    fs, path = url_to_fs(url)
    return fs.open(path, mode)


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def node_local_warning(output: str, nodes: int) -> str | None:
    if nodes > 1 and is_local(output):
        return (
            f"output {output} is a local path on a {nodes}-node cluster: every node writes its "
            "shards to its own disk unless this path is shared storage (NFS, a mounted bucket); "
            "use a shared path or an object store URL (s3://..., gs://...)"
        )
    return None
