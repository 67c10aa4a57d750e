"""Where the weight files are, what they hold, and reading them safely.

- A reference is a local path, or a hub `repo:file` (a file in a hub repository), or for
  folders a hub repo id; hub references go through `huggingface_hub` (`hf_hub_download`,
  `snapshot_download`) at the revision they name (`repo@REV:file`, `repo@REV`: the run pins
  every one to a commit, pf1m/pipeline/revisions.py), else the one `revision_map` gives, else the
  default branch. pf1m/schemas/modelref.py parses them.
- `.pt`/`.bin` files are read only with `torch.load(weights_only=True)` (memory-mapped), so a
  file holding a pickled object is refused instead of executed; `.safetensors` too.
- Listing a file reads key names, shapes and dtypes only (memory-mapped, no weight in memory).
"""

import json
import pickle
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pf1m.models.flamingo.errors import FlamingoLoadError
from pf1m.schemas.modelref import HubRef, parse_hub, split_revision

HUB_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
# a state dict saved inside a training checkpoint (the first of these keys that holds a dict)
NESTED = ("state_dict", "model_state_dict", "model")
LLAMA_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
FOLDER_META = ["*.json", "*.model"]  # configs, indexes and the sentencepiece model
SHARDED = (
    ("model.safetensors.index.json", "*.safetensors"),
    ("pytorch_model.bin.index.json", "*.bin"),
)


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str


def hub_file(ref: str) -> HubRef | None:
    """`ref` as a hub file reference (`repo[@REV]:file`), or None when it names none."""
    hub = parse_hub(ref, with_file=True)
    if hub is None or not hub.filename or ":" in hub.filename or not HUB_REPO.match(hub.repo):
        return None
    return hub


def _revision(ref: str, repo: str, revision_map: dict | None) -> str | None:
    revision_map = revision_map or {}
    return revision_map.get(ref) or revision_map.get(repo)


def resolve_file(ref: str, what: str, revision_map: dict | None = None) -> Path:
    """A local file, or a hub `repo:file` fetched (or found in the cache) by huggingface_hub."""
    local = Path(ref).expanduser()
    if local.is_file():
        return local.resolve()
    hub = hub_file(ref)
    if hub is None:
        raise FlamingoLoadError(f"{what}: {ref} is neither a local file nor a hub `repo:file`")
    from huggingface_hub import hf_hub_download

    repo, name = hub.repo, hub.filename
    revision = hub.revision or _revision(ref, repo, revision_map)
    try:
        return Path(hf_hub_download(repo, name, revision=revision)).resolve()
    except Exception as exc:  # offline, missing repo or file: say which, in one line
        raise FlamingoLoadError(
            f"{what}: cannot fetch {name} from hub repo {repo}: {exc}"
        ) from None


def resolve_folder(ref: str, what: str, revision_map: dict | None = None) -> Path:
    """A local folder, or a hub repo id fetched: configs and tokenizer, then one set of weights
    (safetensors when the repo has them: many LLaMA repos hold both formats)."""
    local = Path(ref.removeprefix("local-dir:")).expanduser()
    if local.is_dir():
        return local.resolve()
    repo, pinned = split_revision(ref)
    if not HUB_REPO.match(repo):
        raise FlamingoLoadError(f"{what}: {ref} is neither a local folder nor a hub repo id")
    from huggingface_hub import hf_hub_download, snapshot_download

    revision = pinned or _revision(ref, repo, revision_map)
    try:
        root = Path(snapshot_download(repo, revision=revision, allow_patterns=FOLDER_META))
        for index, pattern in SHARDED:
            if (root / index).is_file():
                snapshot_download(repo, revision=revision, allow_patterns=[*FOLDER_META, pattern])
                return root.resolve()
    except Exception as exc:
        raise FlamingoLoadError(f"{what}: cannot fetch hub repo {ref}: {exc}") from None
    for name in LLAMA_WEIGHTS:  # one unsharded file: the first format the repo has
        try:
            hf_hub_download(repo, name, revision=revision)
            break
        except Exception:
            continue
    return root.resolve()  # `weight_files` names what is missing


def fetch_optional(ref: str, name: str, revision_map: dict | None = None) -> Path | None:
    """`name` inside folder or hub repo `ref`, or None when it has no such file."""
    local = Path(ref).expanduser()
    if local.is_dir():
        return local / name if (local / name).is_file() else None
    from huggingface_hub import hf_hub_download

    repo, pinned = split_revision(ref)
    try:
        revision = pinned or _revision(ref, repo, revision_map)
        return Path(hf_hub_download(repo, name, revision=revision))
    except Exception:
        return None


def weight_files(folder: Path, names: tuple[str, ...] = LLAMA_WEIGHTS) -> list[Path]:
    """A Hugging Face folder's weight files: one file, or the shards of its index."""
    for name in names:
        if (folder / name).is_file():
            return [folder / name]
        index = folder / f"{name}.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / s for s in shards]
    raise FlamingoLoadError(
        f"rewriter.model: {folder} holds no weights ({' or '.join(names)}, or a sharded index "
        "of them)"
    )


def _torch_load(path: Path) -> dict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).split("\n\n")[0].split("\n")[0]
        raise FlamingoLoadError(
            f"{path}: holds a pickled object that is not plain tensors, refused (files are read "
            f"with torch.load(weights_only=True) only): {reason}"
        ) from None
    except RuntimeError as exc:
        raise FlamingoLoadError(f"{path}: not a readable torch zip file: {exc}") from None
    if isinstance(obj, dict):
        for key in NESTED:
            if isinstance(obj.get(key), dict) and not any(torch.is_tensor(v) for v in obj.values()):
                obj = obj[key]
                break
    bad = [k for k, v in obj.items() if not torch.is_tensor(v)] if isinstance(obj, dict) else []
    if not isinstance(obj, dict) or bad:
        what = f"entries {', '.join(map(str, bad[:3]))} are not tensors" if bad else "not a dict"
        raise FlamingoLoadError(f"{path}: not a state dict of tensors ({what})")
    return obj


def list_tensors(path: Path) -> dict[str, TensorInfo]:
    """Key -> shape and dtype, without reading any weight."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                return {
                    k: TensorInfo(
                        tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())
                    )
                    for k in f.keys()
                }
        except Exception as exc:
            raise FlamingoLoadError(f"{path}: not a readable safetensors file: {exc}") from None
    return {
        k: TensorInfo(tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in _torch_load(path).items()
    }


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Key and tensor, one at a time (memory-mapped: only what is being copied is read)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)
        return
    yield from _torch_load(path).items()
