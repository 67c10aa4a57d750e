"""`pf1m status OUT`: a run's state read from its directory alone (run.json, the commit
markers, the lock), without Ray: the shards done, failed and pending, and how to go on."""

import os
import posixpath
import time

from pf1m.pipeline.commit import read_marker
from pf1m.pipeline.lock import LOCK, describe, stale_reason
from pf1m.pipeline.manifest import load_manifest
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError
from pf1m.schemas.run import RunLock


def is_run_target(target: str) -> bool:
    """A run directory or URL (a path or `scheme://`), as opposed to a Ray job id (one word)."""
    return "://" in target or "/" in target or os.sep in target or os.path.exists(target)


def run_status(target: str) -> list[str]:
    """The lines `pf1m status OUT` prints."""
    fs, root = url_to_fs(target)
    manifest = load_manifest(fs, root)
    if manifest is None:
        raise ConfigError(f"{target}: no run.json here, so no pf1m run (a Ray job id has no '/')")
    done, failed, pending = [], [], []
    for shard, state in sorted(manifest.shards.items()):
        if state.status == "pending":  # a driver killed before it recorded a commit
            marker = read_marker(fs, root, shard)
            if marker is not None and marker.config_hash == manifest.config_hash:
                done.append(shard)
                continue
        {"done": done, "failed": failed, "pending": pending}[state.status].append(shard)
    lock_path = posixpath.join(root, LOCK)
    holder = None
    if fs.exists(lock_path):
        with fs.open(lock_path, "rb") as f:
            holder = RunLock.model_validate_json(f.read())
    state = manifest.status
    if state == "running":
        gone = holder is None or stale_reason(holder, time.time(), _host()) is not None
        state = (
            "running, but no live driver holds it (killed?)" if gone
            else f"running: {describe(holder)}"
        )  # fmt: skip
    lines = [f"run {manifest.run_id} in {target}: {state}"]
    if manifest.error:
        lines.append(f"error: {manifest.error}")
    lines.append(
        f"shards: {len(done)} done, {len(failed)} failed, {len(pending)} pending "
        f"({len(manifest.shards)} in all)"
    )
    for shard in failed:
        lines.append(f"  failed {shard}: {manifest.shards[shard].error}")
    lines.append(f"started {manifest.started_at}, updated {manifest.updated_at}")
    if manifest.status == "succeeded":
        lines.append(f"complete; verify and report: pf1m audit {target}")
    elif state.startswith("running:"):
        lines.append("in progress; Ctrl-C (or SIGTERM) on its driver stops it, resumable")
    else:
        lines.append(f"continue: pf1m resume {target}")
    return lines


def _host() -> str:
    import socket

    return socket.gethostname()
