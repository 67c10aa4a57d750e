"""Read one WebDataset shard as a raw tar stream into validated samples or quarantine records.

Nothing is extracted by path and nothing is unpickled: members are read as byte streams, grouped
by key (WebDataset keeps a sample's members together), decoded with json and PIL only. Whatever
cannot become a sample comes out as `Bad` with its stage and error class, never dropped. A tar
that is truncated or not a tar raises `tarfile.ReadError`: the shard fails as a whole.
"""

import io
import json
import posixpath
import tarfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from PIL import Image
from pydantic import ValidationError

from pf1m.pipeline.prompt import ImageCountMismatch, place_images
from pf1m.schemas.reasons import Stage
from pf1m.schemas.sample import IMAGE_EXTENSIONS, IMAGE_MARKER, InputSample

UNSAFE_EXTENSIONS = ("pkl", "pickle", "pyd", "pth", "pt", "npy")


@dataclass
class Sample:
    key: str
    record: InputSample
    source: str
    images: list[bytes]
    image_names: list[str]
    members: list[tuple[str, int]]


@dataclass
class Bad:
    key: str
    stage: str
    error_class: str
    error_text: str
    members: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class _Group:
    key: str
    files: dict[str, bytes] = field(default_factory=dict)  # extension -> payload
    members: list[tuple[str, int]] = field(default_factory=list)
    duplicate: bool = False


def split_name(name: str) -> tuple[str, str] | None:
    """WebDataset naming: key = directory + basename up to its first dot; None if keyless."""
    directory, base = posixpath.split(name)
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        return None
    return posixpath.join(directory, stem), ext.lower()


def _unsafe(name: str) -> bool:
    return name.startswith("/") or ".." in name.split("/")


def decode_image(payload: bytes) -> Image.Image:
    """Fully decode with PIL's decompression-bomb guard on; its warning counts as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(payload))
        img.load()
    return img


def check_image(payload: bytes) -> None:
    """Raise as `decode_image` does on a corrupt, truncated or oversized image, then free the
    pixels at once: a sample carries the encoded bytes, and whoever needs pixels decodes them.
    The decode is full on purpose: PIL's `verify()` passes a truncated JPEG."""
    decode_image(payload).close()


def _image_members(files: dict[str, bytes]) -> list[tuple[str, bytes]] | None:
    """`KEY.jpg` or `KEY.0.jpg`, `KEY.1.jpg`, ... in index order; None if they mix."""
    single = [(e, p) for e, p in files.items() if e in IMAGE_EXTENSIONS]
    indexed = []
    for ext, payload in files.items():
        index, dot, suffix = ext.partition(".")
        if dot and index.isdigit() and suffix in IMAGE_EXTENSIONS:
            indexed.append((int(index), ext, payload))
    if single and indexed:
        return None
    if single:
        return single
    return [(ext, p) for _, ext, p in sorted(indexed)]


def _decode(group: _Group, default_source: str | None, max_images: int) -> Sample | Bad:
    def bad(stage: str, cls: str, text: str) -> Bad:
        return Bad(group.key, stage, cls, text, group.members)

    if group.duplicate:
        return bad(
            Stage.READ, "DuplicateKey", f"key {group.key!r} appears again later in the shard"
        )
    unsafe = [e for e in group.files if e.rsplit(".", 1)[-1] in UNSAFE_EXTENSIONS]
    if unsafe:
        return bad(Stage.READ, "UnsafeMember", f"refusing serialized-object members: {unsafe}")
    if "json" not in group.files:
        return bad(Stage.DECODE, "MissingJson", f"no {group.key}.json among {sorted(group.files)}")
    try:
        obj = json.loads(group.files["json"].decode("utf-8"))
    except UnicodeDecodeError as exc:
        return bad(Stage.DECODE, "UnicodeDecodeError", str(exc))
    except json.JSONDecodeError as exc:
        return bad(Stage.DECODE, "JSONDecodeError", str(exc))
    try:
        record = InputSample.model_validate(obj)
    except ValidationError as exc:
        return bad(Stage.VALIDATE, "ValidationError", str(exc))
    images = _image_members(group.files)
    if images is None:
        return bad(Stage.VALIDATE, "AmbiguousImages", "both KEY.ext and KEY.N.ext images")
    if record.needs_image() and not images:
        return bad(Stage.VALIDATE, "MissingImage", f"task {record.task} needs an image")
    if not record.needs_image() and (images or IMAGE_MARKER in record.instruction):
        return bad(Stage.VALIDATE, "UnexpectedImage", "task text carries no image")
    if len(images) > max_images:
        return bad(Stage.VALIDATE, "TooManyImages", f"{len(images)} images, limit {max_images}")
    try:
        place_images(record.instruction, len(images), IMAGE_MARKER)
    except ImageCountMismatch as exc:
        return bad(Stage.VALIDATE, "ImageCountMismatch", str(exc))
    for ext, payload in images:
        try:
            check_image(payload)
        except Exception as exc:  # any PIL failure is this sample's, not the shard's
            return bad(Stage.DECODE, type(exc).__name__, f"{group.key}.{ext}: {exc}")
    source = default_source or record.source or "unknown"
    names = [f"{group.key}.{ext}" for ext, _ in images]
    return Sample(group.key, record, source, [p for _, p in images], names, group.members)


def _member_bad(member: tarfile.TarInfo, error_class: str, why: str) -> Bad:
    """A member that cannot belong to any sample is quarantined on its own, name as key."""
    return Bad(member.name, Stage.READ, error_class, f"{member.name}: {why}",
               [(member.name, member.size)])  # fmt: skip


def _refuse(member: tarfile.TarInfo) -> Bad | None:
    if not member.isfile():
        return _member_bad(member, "UnsupportedMember", "not a regular file")
    if _unsafe(member.name):
        return _member_bad(member, "UnsafeMemberPath", "absolute or '..' path")
    return None


def read_samples(
    fileobj: IO[bytes], default_source: str | None = None, max_images: int = 2
) -> Iterator[Sample | Bad]:
    """Yield each sample of a tar stream as soon as its members are complete."""
    seen: set[str] = set()
    group: _Group | None = None
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if member.isdir():
                continue
            name = member.name
            refused = _refuse(member)
            if refused is not None:
                yield refused
                continue
            parts = split_name(name)
            if parts is None:
                yield _member_bad(member, "KeylessMember", "no KEY.EXT name")
                continue
            key, ext = parts
            if group is None or key != group.key:
                if group is not None:
                    yield _decode(group, default_source, max_images)
                group = _Group(key, duplicate=key in seen)
                seen.add(key)
            stream = tar.extractfile(member)
            payload = stream.read() if stream is not None else b""
            group.members.append((name, member.size))
            if ext in group.files:
                group.duplicate = True
            group.files[ext] = payload
        if group is not None:
            yield _decode(group, default_source, max_images)
