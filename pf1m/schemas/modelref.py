"""How a config names a model or a weights file: parsed here and nowhere else.

- A local path that exists is a path, whatever characters it holds (`@` and `:` included).
- `ORG/NAME` (or `NAME`) is a hub repository; `ORG/NAME@REV` pins a revision (a commit sha, a
  branch or a tag). Hub ids hold no `@`, so the last `@` splits the revision off.
- `ORG/NAME:FILE` and `ORG/NAME@REV:FILE` name one file of a hub repository (checkpoints).
- open_clip keeps its own prefixes: `local-dir:PATH` and `hf-hub:ORG/NAME[@REV]`; a built-in
  architecture's `pretrained` tag pins as `TAG@REV` (the revision of the repository the tag
  downloads from).

At run start the driver rewrites every hub reference of the config into its pinned form
(`ORG/NAME@SHA`, ...), so the loaders on every node read the same commit.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"

SourceKind = Literal["repo", "file", "open_clip"]


@dataclass(frozen=True)
class HubRef:
    """A hub repository, an optional requested revision and an optional file inside it."""

    repo: str
    revision: str | None = None
    filename: str | None = None

    @property
    def key(self) -> str:
        """What run.json records the resolved commit under: the repo, and the revision asked
        for when the config names one (a changed pin is then a new resolution)."""
        return f"{self.repo}@{self.revision}" if self.revision else self.repo

    def pinned(self, commit: str) -> str:
        """The reference rewritten to name `commit`."""
        text = f"{self.repo}@{commit}"
        return f"{text}:{self.filename}" if self.filename else text


@dataclass(frozen=True)
class ModelSource:
    """One model or weights file a run loads, and the config field that names it."""

    role: str  # its key in the config hash's `model_fingerprints`
    field: str  # dotted config field, for messages and for pinning (`rewriter.adapters.0.path`)
    text: str  # as written in the config
    kind: SourceKind  # repo: a folder or hub repository; file: a file or `repo:file`
    pretrained: str | None = None  # open_clip: the weights (a tag, a file or `repo:file`)
    pretrained_field: str | None = None
    contents: bool = False  # fingerprint every byte of a local folder (small LoRA adapters)
    hashed: bool = True  # False: pinned and recorded, but not a fingerprint of its own


def local_path(text: str) -> Path | None:
    """The existing local file or folder `text` names, else None."""
    path = Path(text).expanduser()
    return path if path.exists() else None


def split_revision(text: str) -> tuple[str, str | None]:
    """`NAME@REV` -> (NAME, REV); anything else -> (text, None)."""
    name, sep, revision = text.rpartition("@")
    return (name, revision) if sep and name and revision else (text, None)


def parse_hub(text: str, with_file: bool = False) -> HubRef | None:
    """The hub reference `text` names; None when it is an existing local path."""
    if local_path(text) is not None:
        return None
    filename = None
    if with_file and ":" in text:
        text, _, filename = text.partition(":")
    repo, revision = split_revision(text)
    return HubRef(repo, revision, filename or None)


def load_args(text: str) -> tuple[str, str | None]:
    """(path or repo, revision) for `from_pretrained`-style loaders: `ORG/NAME@SHA` ->
    (`ORG/NAME`, `SHA`); a local path -> (the path, None)."""
    ref = parse_hub(text)
    return (text, None) if ref is None else (ref.repo, ref.revision)


def open_clip_hub(model: str) -> HubRef | None:
    """The repository of an `hf-hub:` open_clip model name, else None."""
    if not model.startswith(HF_HUB):
        return None
    repo, revision = split_revision(model.removeprefix(HF_HUB))
    return HubRef(repo, revision)
