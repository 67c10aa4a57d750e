"""`pf1m export OUT --format F --to DEST`: the kept rows of a run's committed, verified shards,
streamed into a trainer's format, with DEST/export.json written last (source run id, config
hash, files, what was skipped). DEST must be new or empty; OUT is never modified."""

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pf1m.export import card, layouts
from pf1m.export.packing import TokenCounter, load_tokenizer, pack
from pf1m.export.reader import Source, kept_rows, open_source
from pf1m.export.sinks import ImageFiles, JsonArraySink, ParquetSink, TarSink
from pf1m.pipeline.commit import now_iso, write_atomic
from pf1m.pipeline.manifest import package_versions
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError
from pf1m.schemas.export import (
    EXPORT_MANIFEST,
    FORMATS,
    HF_SCHEMA,
    Conversation,
    ExportConfig,
    ExportManifest,
    MultiTurn,
)

Row = dict[str, Any]


@dataclass
class MultiTurnRequest:
    k: int
    tokenizer: str
    image_tokens: int
    max_tokens: int | None = None  # default: the settings' packing.max_tokens
    seed: int | None = None  # default: the settings' packing.seed


def _groups(rows, request: MultiTurnRequest | None, settings: ExportConfig, info: MultiTurn | None):
    """Conversations as lists of rows: one row each, or packed (`--multi-turn`)."""
    if request is None:
        for row in rows:
            yield [row], None, False
        return
    try:
        tokenizer = load_tokenizer(request.tokenizer)
    except Exception as exc:  # any loader failure is the argument's fault
        raise ConfigError(f"--tokenizer {request.tokenizer}: cannot load it ({exc})") from None
    style = settings.conversation
    counter = TokenCounter(tokenizer, request.image_tokens, style.image_marker)

    def tokens(group: list[Row]) -> int:
        refs = [[""] * len(r["images"] or []) for r in group]
        conv = layouts.conversation(group, refs, style, "count")
        return counter(conv.text, len(conv.images))

    def fits(group) -> bool:
        return tokens(group) <= info.max_tokens

    for group, over in pack(rows, request.k, fits, seed=info.seed, window=info.window):
        info.conversations += 1
        info.over_budget += over
        yield group, tokens(group), over


def _conversations(source, request, settings, info, refs_of) -> Iterator[tuple[Conversation, list]]:
    for n, (group, tokens, over) in enumerate(_groups(kept_rows(source), request, settings, info)):
        refs = [refs_of(row) for row in group]
        conv_id = group[0]["uid"] if len(group) == 1 else f"conv-{n:09d}"
        conv = layouts.conversation(group, refs, settings.conversation, conv_id)
        conv.tokens, conv.over_budget = tokens, over
        yield conv, group


def _check_dest(dfs, droot: str) -> None:
    if dfs.exists(droot) and (not dfs.isdir(droot) or dfs.ls(droot)):
        raise ConfigError(f"{droot}: exists and is not empty; export writes a new directory")


def export_run(
    src: str,
    fmt: str,
    dest: str,
    settings: ExportConfig,
    shard_size: int | None = None,
    multi_turn: MultiTurnRequest | None = None,
) -> ExportManifest:
    """Export; returns the manifest it wrote to DEST/export.json."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if multi_turn is not None and fmt == "pf1m-json":
        raise ConfigError(
            "--multi-turn: pf1m-json records are single samples; use llava, hf or "
            "webdataset for conversations"
        )
    if multi_turn is not None and (multi_turn.k < 1 or multi_turn.image_tokens < 0):
        raise ConfigError("--multi-turn must be at least 1 and --image-tokens at least 0")
    fs, root = url_to_fs(src)
    source = open_source(fs, root)
    dfs, droot = url_to_fs(dest)
    _check_dest(dfs, droot)
    dfs.makedirs(droot, exist_ok=True)
    size = shard_size if shard_size is not None else settings.shard_size.get(fmt)
    info = None
    if multi_turn is not None:
        info = MultiTurn(
            k=multi_turn.k,
            tokenizer=multi_turn.tokenizer,
            image_tokens=multi_turn.image_tokens,
            max_tokens=multi_turn.max_tokens or settings.packing.max_tokens,
            seed=settings.packing.seed if multi_turn.seed is None else multi_turn.seed,
            window=settings.packing.window,
        )
    manifest = ExportManifest(
        format=fmt,
        source=src,
        source_run_id=source.run.manifest.run_id,
        source_config_hash=source.run.manifest.config_hash,
        run=source.run_json,
        shards=list(source.verified),
        skipped=source.skipped,
        problems=source.problems,
        complete=source.complete,
        multi_turn=info,
        exported_at=now_iso(),
        versions=package_versions(),
    )
    images = ImageFiles(dfs, droot)
    writer = {"pf1m-json": _pf1m_json, "llava": _llava, "hf": _hf, "webdataset": _webdataset}[fmt]
    manifest.files = writer(source, dfs, droot, settings, size, multi_turn, info, images, manifest)
    manifest.records = sum(f.records for f in manifest.files)
    manifest.images += images.count  # files beside JSON (hf and webdataset count their own)
    if fmt == "hf":
        manifest.card = "README.md"
        text = card.render(source, manifest, settings)
        write_atomic(dfs, posixpath.join(droot, "README.md"), text.encode())
    write_atomic(
        dfs, posixpath.join(droot, EXPORT_MANIFEST), manifest.model_dump_json(indent=1).encode()
    )
    return manifest


def _write_images(row: Row, images: ImageFiles, image_dir: str) -> list[str]:
    paths = []
    for i, img in enumerate(row["images"] or []):
        rel = layouts.image_relpath(image_dir, row, i)
        images.write(rel, img["bytes"])
        paths.append(rel)
    return paths


def _clip_threshold(source: Source) -> float | None:
    clip = source.config.filters.clip_paragraph
    return None if clip is None else clip.threshold


def _pf1m_json(source, dfs, droot, settings, size, request, info, images, manifest):
    sink = JsonArraySink(dfs, droot, "pf1m-{index}.json", size)
    threshold = _clip_threshold(source)
    for row in kept_rows(source):
        paths = _write_images(row, images, settings.image_dir)
        sink.add(layouts.pf1m_record(row, paths, settings.published, threshold))
        manifest.samples += 1
    return sink.close()


def _llava(source, dfs, droot, settings, size, request, info, images, manifest):
    sink = JsonArraySink(dfs, droot, "llava-{index}.json", size)

    def refs(row):
        return _write_images(row, images, settings.image_dir)

    for conv, group in _conversations(source, request, settings, info, refs):
        sink.add(layouts.llava_record(conv))
        manifest.samples += len(group)
    return sink.close()


def _hf(source, dfs, droot, settings, size, request, info, images, manifest):
    sink = ParquetSink(
        dfs, droot, "data/train-{index}.parquet", size, HF_SCHEMA, settings.row_group_size
    )

    def refs(row):
        return [layouts.image_relpath("", row, i).lstrip("/") for i in range(len(row["images"]))]

    for conv, group in _conversations(source, request, settings, info, refs):
        payloads = [img["bytes"] for row in group for img in row["images"] or []]
        sink.add(layouts.hf_row(conv, payloads))
        manifest.samples += len(group)
        manifest.images += len(payloads)
    return sink.close()


def _webdataset(source, dfs, droot, settings, size, request, info, images, manifest):
    sink = TarSink(dfs, droot, "pf1m-{index}.tar", size)
    n = 0

    def refs(row):  # extensions now; member names once the sample's key is known
        return [layouts.image_ext(img) for img in row["images"] or []]

    for conv, group in _conversations(source, request, settings, info, refs):
        key = f"{n:09d}"
        n += 1
        conv.images = [f"{key}.{i}.{ext}" for i, ext in enumerate(conv.images)]
        payloads = [img["bytes"] for row in group for img in row["images"] or []]
        members = [(f"{key}.json", json.dumps(layouts.wds_json(conv)).encode())]
        members += list(zip(conv.images, payloads, strict=True))
        sink.add(members)
        manifest.samples += len(group)
        manifest.images += len(payloads)
    return sink.close()
