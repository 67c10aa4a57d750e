"""Pin every model a run loads to one commit, so that every node reads the same weights.

At run start each hub reference of the config (`RunConfig.model_sources`) resolves to a
commit sha, in this order:
- the commit OUT/run.json recorded for it (a resume, or the same command run again into OUT):
  reused even when the hub or the local cache has moved on since;
- the hub, when reachable (`HfApi.model_info`);
- this machine's hub cache (`refs/` in `HF_HUB_CACHE`, as an offline `snapshot_download`
  reads it);
- a full commit sha written in the config is taken as it is when neither can check it;
- else the run is refused before any work, saying how to pin one (`ORG/NAME@REV`).

The config handed to actors and shard tasks names every hub model as `ORG/NAME@SHA`, and the
loaders pass the sha as `revision=` (pf1m/models/hub.py). Local paths are fingerprinted, not
pinned. A model path that is neither an existing path nor a hub id is refused here too,
naming the field and the path; inside a Ray job, a relative one gets the likely reason.
"""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pf1m.pipeline.fingerprint import hub_fingerprint, model_fingerprint
from pf1m.schemas.config import ConfigError, RunConfig
from pf1m.schemas.modelref import (
    HF_HUB,
    LOCAL_DIR,
    HubRef,
    ModelSource,
    local_path,
    open_clip_hub,
    parse_hub,
    split_revision,
)

HUB_TIMEOUT_S = 10.0  # one metadata request per repository at start-up
FULL_SHA = re.compile(r"[0-9a-f]{40}")
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a job's entrypoint process


class Refused(ValueError):
    """One model reference that cannot run; the message names the field."""


@dataclass
class Pinned:
    config: RunConfig  # hub references rewritten to `...@SHA`: what actors and tasks load
    revisions: dict[str, str]  # HubRef.key -> commit, recorded in run.json
    fingerprints: dict[str, str]  # role -> fingerprint, the config hash's model_fingerprints
    notes: list[str] = field(default_factory=list)


def ray_job_id() -> str | None:
    """The submission id when this process is a Ray job's entrypoint, else None."""
    raw = os.environ.get(JOB_ENV)
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id") or "unknown"
    except (ValueError, AttributeError):
        return "unknown"


def _no_path(text: str, what: str = "folder") -> str:
    """`no such folder: PATH ...`, with the reason a Ray job usually has for it."""
    path = os.path.expanduser(text)
    line = f"no such {what}: {text}"
    if not os.path.isabs(path):
        line += f" (looked for {os.path.abspath(path)})"
        if ray_job_id() is not None:
            line += (
                ". This runs inside a Ray job, whose working directory holds what `ray job "
                "submit --working-dir .` uploaded: Ray uploads only files git does not ignore, "
                "so a git-ignored folder such as demo_out/ is not there. Give a path every "
                "node can read (shared storage), or a hub id"
            )
    return line


def _missing(field_name: str, text: str, what: str = "folder") -> str:
    return f"{field_name}: {_no_path(text, what)}"


def _valid_repo(repo: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        return False
    return True


def _hub_commit(ref: HubRef) -> tuple[str | None, str]:
    """(commit, why not) from the hub itself."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        return None, "the hub is not asked (HF_HUB_OFFLINE is set)"
    try:
        info = HfApi().model_info(ref.repo, revision=ref.revision, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # unreachable, unknown, gated: the cache may still have it
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return None, f"the hub did not give it ({type(exc).__name__}: {first})"
    return info.sha, ""


def _cached_commit(ref: HubRef) -> str | None:
    """The commit this machine's hub cache has for the reference (its `refs/`), else None."""
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(ref.repo, revision=ref.revision, local_files_only=True)
    except Exception:
        return None
    return Path(snapshot).name


class _Resolver:
    def __init__(self, recorded: Mapping[str, str]) -> None:
        self.recorded = dict(recorded)
        self.used: dict[str, str] = {}
        self.notes: list[str] = []

    def commit(self, ref: HubRef, field_name: str, text: str) -> str:
        if not _valid_repo(ref.repo):
            raise Refused(_missing(field_name, text) + ", and it is not a hub id either")
        key = ref.key
        if key in self.used:
            return self.used[key]
        commit = self.recorded.get(key)
        why = ""
        if commit is None:
            commit, why = _hub_commit(ref)
        if commit is None:
            commit = _cached_commit(ref)
        if commit is None and ref.revision and FULL_SHA.fullmatch(ref.revision):
            commit = ref.revision
            self.notes.append(f"{field_name}: commit {commit} is used as given ({why})")
        if commit is None:
            from huggingface_hub import constants

            at = f" at {ref.revision}" if ref.revision else ""
            raise Refused(
                f"{field_name}: {text}: cannot pin it to a commit: {why}, and the hub cache "
                f"here ({constants.HF_HUB_CACHE}) has no snapshot of {ref.repo}{at}. Pin one "
                f"in the config, {field_name}: {ref.pinned('COMMIT')} (a commit sha, branch or "
                f"tag), or download it where the driver runs (`hf download {ref.repo}`). "
                f"Nor is it a local path: {_no_path(text)}"
            )
        self.used[key] = commit
        return commit


def _repo(src: ModelSource, res: _Resolver) -> tuple[str, dict[str, str]]:
    local = local_path(src.text)
    if local is not None:
        return model_fingerprint(local, src.contents), {}
    ref = parse_hub(src.text)
    commit = res.commit(ref, src.field, src.text)
    return hub_fingerprint(ref.repo, commit), {src.field: ref.pinned(commit)}


def _file(text: str, field_name: str, res: _Resolver) -> tuple[str, dict[str, str]]:
    local = local_path(text)
    if local is not None:
        return model_fingerprint(local), {}
    ref = parse_hub(text, with_file=True)
    if ref.filename is None:
        raise Refused(_missing(field_name, text, "file") + ", nor a hub file ORG/NAME:FILE")
    commit = res.commit(ref, field_name, text)
    return hub_fingerprint(ref.repo, commit, ref.filename), {field_name: ref.pinned(commit)}


def _open_clip_weights(
    arch: str, weights: str, field_name: str, res: _Resolver
) -> tuple[str, dict[str, str]]:
    """A built-in architecture's `pretrained`: a local file, `ORG/NAME:FILE`, or an open_clip
    tag (`TAG[@REV]`) whose weights come from a hub repository (pinned) or a URL."""
    if local_path(weights) is not None or ":" in weights:
        return _file(weights, field_name, res)
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    tag, revision = split_revision(weights)
    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(arch)) or "none"
        raise Refused(
            f"{field_name}: {weights} is neither an existing file nor an open_clip tag of "
            f"{arch} (its tags: {tags})"
        )
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # as open_clip splits it
        ref = HubRef(repo, revision)
        commit = res.commit(ref, field_name, weights)
        return hub_fingerprint(repo, commit, filename or None), {field_name: f"{tag}@{commit}"}
    if revision:
        raise Refused(f"{field_name}: {tag} downloads from a URL, which has no revisions")
    return f"url:{cfg.get('url') or cfg.get('file')}", {}


def _open_clip(src: ModelSource, res: _Resolver) -> tuple[str, dict[str, str]]:
    arch = src.text
    if arch.startswith(LOCAL_DIR):  # open_clip ignores `pretrained` then
        path = arch.removeprefix(LOCAL_DIR)
        if local_path(path) is None:
            raise Refused(_missing(src.field, path))
        return model_fingerprint(path), {}
    hub = open_clip_hub(arch)
    if hub is not None:
        commit = res.commit(hub, src.field, arch)
        return hub_fingerprint(hub.repo, commit), {src.field: HF_HUB + hub.pinned(commit)}
    parts, pins = [], {}
    if local_path(arch) is not None:  # an open_clip model-config JSON (flamingo's vision)
        parts.append(model_fingerprint(arch))
    elif "/" in arch or arch.endswith(".json"):
        raise Refused(_missing(src.field, arch, "file"))
    if src.pretrained is None:
        parts.append(f"open_clip:{arch}")  # random weights: the architecture is all there is
    else:
        fingerprint, pins = _open_clip_weights(arch, src.pretrained, src.pretrained_field, res)
        parts.append(fingerprint)
    return "+".join(parts), pins


KINDS = {"repo": _repo, "open_clip": _open_clip}


def _set(data: dict, dotted: str, value: str) -> None:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def pin_models(cfg: RunConfig, recorded: Mapping[str, str] | None = None) -> Pinned:
    """Resolve every model `cfg` loads (see the module docstring); raises ConfigError naming
    each field that cannot be pinned."""
    res = _Resolver(recorded or {})
    fingerprints: dict[str, str] = {}
    pins: dict[str, str] = {}
    problems: list[str] = []
    for src in cfg.model_sources():
        try:
            if src.kind == "file":
                fingerprint, pinned = _file(src.text, src.field, res)
            else:
                fingerprint, pinned = KINDS[src.kind](src, res)
        except Refused as exc:
            problems.append(str(exc))
            continue
        if src.hashed:
            fingerprints[src.role] = fingerprint
        pins.update(pinned)
    if problems:
        raise ConfigError("cannot load these models:\n" + "\n".join(f"  {p}" for p in problems))
    data = cfg.model_dump()
    for dotted, text in pins.items():
        _set(data, dotted, text)
    return Pinned(RunConfig.model_validate(data), res.used, fingerprints, res.notes)


def legacy_view(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`new` with each model fingerprint that an older pf1m recorded without a commit
    (`hub:NAME`, when the driver's machine had no cached snapshot) put back as recorded, and
    the roles concerned. Such a run never said which weights it loaded; it continues with the
    commit resolved now, which run.json records from then on."""
    fingerprints = dict(new["model_fingerprints"])
    roles = []
    for role, value in old.get("model_fingerprints", {}).items():
        unpinned = isinstance(value, str) and value.startswith("hub:") and "@" not in value
        if unpinned and role in fingerprints and fingerprints[role] != value:
            fingerprints[role] = value
            roles.append(role)
    return {**new, "model_fingerprints": fingerprints}, roles
