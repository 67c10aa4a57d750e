"""`pf1m import-pf1m JSON --images ROOT --to OUT`: released PF-1M records (and this project's
`pf1m-json` exports) back into a committed run directory, so `pf1m audit` and `pf1m refilter`
work on them.

- This project's exports carry a `pf1m` object per record and DEST/export.json with the source
  run's config and hash: the rows come back as they were (same uid, scores, paragraphs).
- The released file has neither. Each record gets: uid `SHARD/KEY` (KEY its position in the
  file), source from the first folder of its image path relative to ROOT (`text` without an
  image), task from the fields present (`derive_task`), `rewrite_raw` = the kept paragraphs
  then the removed ones (the order is not published), and the config of the `import.preset`
  (the paper's filters).
- A record that cannot be imported (invalid fields, an image missing under ROOT, a path that
  leaves ROOT) becomes a quarantine row of stage `import`, never a silent loss.
"""

import json
import posixpath
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pf1m.export.jsonstream import iter_json_records
from pf1m.export.layouts import safe_component
from pf1m.filters.clip_paragraph import split_paragraphs
from pf1m.pipeline.commit import now_iso
from pf1m.pipeline.manifest import load_manifest, package_versions, save_manifest
from pf1m.pipeline.plan import input_fingerprint
from pf1m.pipeline.shard_output import ShardOutput
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.config import ConfigError, Writer, config_hash, load_config, validate_config
from pf1m.schemas.export import (
    EXPORT_MANIFEST,
    IMG_PATH,
    ExportConfig,
    ExportManifest,
    Pf1mExtra,
    Pf1mRecord,
)
from pf1m.schemas.run import RunManifest, ShardState
from pf1m.schemas.sample import IMAGE_MARKER

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGE = "import"
CARRIED = ("revisions",)  # run.json fields of the source run an imported run keeps
_IMG = re.compile(re.escape(IMG_PATH) + "(.*?)" + re.escape(IMG_PATH), re.DOTALL)


class BadRecord(Exception):
    """A record that cannot become a row; its class name is the quarantine error class."""

    def __init__(self, error_class: str, text: str) -> None:
        super().__init__(text)
        self.error_class = error_class


def derive_task(record: Pf1mRecord, n_images: int) -> str:
    """The task of a released record: no image -> text; NLI logits -> vqa; two or more images ->
    change_caption; an STS score or paragraph scores -> caption; otherwise classification."""
    if n_images == 0:
        return "text"
    if record.nli_similarity is not None:
        return "vqa"
    if n_images > 1:
        return "change_caption"
    if record.sts_similarity is not None or record.paragraph_clip_scores is not None:
        return "caption"
    return "classification"


def resolve_image(fs, root: str, path: str) -> str:
    """The file under ROOT an `<img_path>` names: a relative path joined to ROOT (never leaving
    it), an absolute one by its longest tail that exists under ROOT (released paths are the
    authors' absolute paths)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadRecord("UnsafeImagePath", f"{path}: `..` would leave the image root")
    if not path.startswith("/"):
        candidates = ["/".join(parts)]
    else:
        candidates = ["/".join(parts[i:]) for i in range(len(parts))]
    for rel in candidates:
        if fs.isfile(posixpath.join(root, rel)):
            return rel
    raise BadRecord("MissingImage", f"{path}: not found under the image root")


def paragraphs_of(
    record: Pf1mRecord, extra: Pf1mExtra | None, output: str
) -> list[dict[str, Any]] | None:
    """Stored paragraphs (text, clip_score) in their original order. With the `pf1m` object:
    texts are the paragraphs of `rewrite_raw` and the flags say which list each score is in.
    Released records: kept paragraphs first (texts from `output`), then the removed ones."""
    scores = record.paragraph_clip_scores
    if scores is None and not record.filtered_paragraphs:
        return None
    kept_texts = split_paragraphs(output)
    kept = []
    for i, s in enumerate(scores or []):
        if isinstance(s, (list, tuple)):
            kept.append({"text": s[1], "clip_score": float(s[0])})
        else:
            text = kept_texts[i] if i < len(kept_texts) else ""
            kept.append({"text": text, "clip_score": float(s)})
    removed = [{"text": t, "clip_score": float(s)} for s, t in record.filtered_paragraphs or []]
    if extra is None or extra.paragraph_kept is None:
        return kept + removed
    flags = extra.paragraph_kept
    texts = split_paragraphs(extra.rewrite_raw or "")
    if (
        len(flags) != len(kept) + len(removed)
        or sum(flags) != len(kept)
        or len(texts) != len(flags)
    ):
        raise BadRecord("InvalidRecord", "pf1m.paragraph_kept does not match the paragraph lists")
    k, r = iter(kept), iter(removed)
    ordered = [next(k) if flag else next(r) for flag in flags]
    return [{"text": t, "clip_score": p["clip_score"]} for t, p in zip(texts, ordered, strict=True)]


@dataclass
class ImportResult:
    out: str
    shards: int = 0
    rows: int = 0
    quarantined: int = 0
    released: bool = True  # no pf1m objects: fields were derived


class _Importer:
    def __init__(self, fs_images, images_root: str) -> None:
        self.ifs, self.iroot = fs_images, images_root

    def row(self, raw: Any, shard: str, index: int, run_id: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise BadRecord("InvalidRecord", "a record must be a JSON object")
        known = {k: v for k, v in raw.items() if k in Pf1mRecord.model_fields}
        try:
            record = Pf1mRecord.model_validate(known)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise BadRecord("InvalidRecord", f"{loc}: {first['msg']}") from None
        paths = _IMG.findall(record.input)
        extra = record.pf1m
        images = []
        resolved = []
        for i, path in enumerate(paths):
            rel = resolve_image(self.ifs, self.iroot, path)
            resolved.append(rel)
            with self.ifs.open(posixpath.join(self.iroot, rel), "rb") as f:
                name = extra.image_names[i] if extra and i < len(extra.image_names) else rel
                images.append({"bytes": f.read(), "path": name})
        instruction = _IMG.sub(IMAGE_MARKER, record.input)
        if extra is not None and extra.markers_added:
            instruction = instruction.replace(f"{IMAGE_MARKER}\n", "", len(paths))
        if extra is not None:
            uid, key, row_shard = extra.uid, extra.key, extra.shard
            source, task = extra.source, extra.task
        else:
            key = f"{index:09d}"
            uid, row_shard = f"{shard}/{key}", shard
            source = resolved[0].split("/")[0] if resolved and "/" in resolved[0] else None
            source = safe_component(source) if source else None
            task = derive_task(record, len(paths))
        paragraphs = paragraphs_of(record, extra, record.output)
        rewrite_raw = (
            extra.rewrite_raw
            if extra and extra.rewrite_raw is not None
            else ("\n\n".join(p["text"] for p in paragraphs) if paragraphs else record.output)
        )
        logits = record.nli_similarity
        nli_label = extra.nli_label if extra else None
        if nli_label is None and logits is not None and len(logits) == 3:
            nli_label = ("contradiction", "entailment", "neutral")[logits.index(max(logits))]
        return {
            "uid": uid,
            "shard": row_shard,
            "key": key,
            "source": source,
            "task": task,
            "instruction": instruction,
            "original": record.original,
            "rewrite_raw": rewrite_raw,
            "output": record.output,
            "images": images,
            "rouge_l": record.rouge_score,
            "sts": record.sts_similarity,
            "nli_logits": logits,
            "nli_label": nli_label,
            "paragraphs": paragraphs,
            "reward": record.reward,
            "reward_original": extra.reward_original if extra else None,
            "finish_reason": extra.finish_reason if extra else None,
            "prompt_tokens": extra.prompt_tokens if extra else None,
            "output_tokens": extra.output_tokens if extra else None,
            "kept": True,
            "reject_reasons": [],
            "run_id": run_id,
            "reasoning": extra.reasoning if extra else None,
        }


def _inputs(fs, path: str) -> tuple[list[str], ExportManifest | None]:
    """The JSON files to read, and this project's export manifest when there is one."""
    folder = path if fs.isdir(path) else posixpath.dirname(path)
    manifest = None
    mpath = posixpath.join(folder, EXPORT_MANIFEST)
    if fs.exists(mpath):
        with fs.open(mpath, "rb") as f:
            manifest = ExportManifest.model_validate_json(f.read())
        if manifest.format != "pf1m-json":
            raise ConfigError(f"{path}: a {manifest.format} export, not pf1m-json")
    if fs.isdir(path):
        if manifest is None:
            raise ConfigError(f"{path}: a folder without {EXPORT_MANIFEST}; name the JSON file")
        return [posixpath.join(path, f.path) for f in manifest.files], manifest
    if not fs.isfile(path):
        raise ConfigError(f"{path}: no such file")
    return [path], manifest


def _records(fs, files: list[str]) -> Iterator[Any]:
    for file in files:
        with fs.open(file, "rb") as f:
            yield from iter_json_records(f)


def _source_shard(record: Any) -> str | None:
    extra = record.get("pf1m") if isinstance(record, dict) else None
    shard = extra.get("shard") if isinstance(extra, dict) else None
    if not isinstance(shard, str) or not shard or shard.startswith("/"):
        return None
    return None if ".." in shard.split("/") else shard


def shard_batches(
    records: Iterator[Any], size: int, stem: str, own: bool
) -> Iterator[tuple[str, list[Any]]]:
    """(shard name, records): this project's exports come back as their source shards (rows
    keep their `shard`, the export wrote them in shard order); released records in shards of
    `size`, named STEM-NNNNN."""
    batch: list[Any] = []
    current, n = "", 0
    for record in records:
        if own:
            key = _source_shard(record) or f"{stem}-unsharded"
            if batch and key != current:
                yield current, batch
                batch = []
            current = key
        elif len(batch) == size:
            yield f"{stem}-{n:05d}", batch
            batch, n = [], n + 1
        batch.append(record)
    if batch:
        yield (current if own else f"{stem}-{n:05d}"), batch


def _run_config(manifest: ExportManifest | None, settings: ExportConfig, src: str, dest: str):
    """(config dict, hashed view, config hash): the source run's for this project's exports (so
    the imported run is the same run to audit and refilter), else the import preset's."""
    if manifest is not None:
        run = RunManifest.model_validate(manifest.run)  # as run.json is read: older layouts too
        config = {**run.config, "input": src, "output": dest}
        validate_config(config, f"{src}: {EXPORT_MANIFEST}")
        return config, run.hashed, run.config_hash
    overrides = [*settings.import_.overrides, f"input={src}", f"output={dest}"]
    cfg = load_config(CONFIGS / settings.import_.preset, overrides)
    hashed = cfg.hashed_view({name: "imported:unknown" for name in cfg.models()})
    return cfg.model_dump(mode="json"), hashed, config_hash(hashed)


def import_pf1m(
    src: str, images_root: str, dest: str, settings: ExportConfig, shard_size: int | None = None
) -> ImportResult:
    fs, path = url_to_fs(src)
    ifs, iroot = url_to_fs(images_root)
    dfs, droot = url_to_fs(dest)
    if not ifs.isdir(iroot):
        raise ConfigError(f"--images {images_root}: not a folder")
    files, export_manifest = _inputs(fs, path)
    if load_manifest(dfs, droot) is not None:
        raise ConfigError(f"{dest} already holds a run; import writes a new directory")
    config, hashed, chash = _run_config(export_manifest, settings, src, dest)
    size = shard_size or settings.import_.shard_size
    # What the source run recorded about its models (e.g. pinned revisions) stays with it.
    carried = {
        k: v
        for k, v in (export_manifest.run if export_manifest else {}).items()
        if k in CARRIED and k in RunManifest.model_fields
    }
    manifest = RunManifest(
        run_id=uuid.uuid4().hex[:12],
        config=config,
        config_hash=chash,
        hashed=hashed,
        versions=package_versions(),
        started_at=now_iso(),
        updated_at=now_iso(),
        summary={"imported_from": src, "images": images_root},
        **carried,
    )
    if export_manifest is not None:
        manifest.summary["source_run_id"] = export_manifest.source_run_id
    dfs.makedirs(droot, exist_ok=True)
    save_manifest(dfs, droot, manifest)
    result = ImportResult(dest, released=export_manifest is None)
    importer = _Importer(ifs, iroot)
    own = export_manifest is not None
    stem = safe_component(posixpath.basename(path.rstrip("/")).rsplit(".", 1)[0])
    origin = posixpath.join(path, EXPORT_MANIFEST) if fs.isdir(path) else path
    fingerprint = input_fingerprint(fs.unstrip_protocol(origin))
    try:
        for shard, batch in shard_batches(_records(fs, files), size, stem, own):
            _commit(dfs, droot, shard, batch, importer, manifest, fingerprint, result, config)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{src}: not a JSON array or JSON lines ({exc})") from None
    manifest.status = "succeeded"
    manifest.summary.update(rows=result.rows, quarantined=result.quarantined)
    manifest.updated_at = manifest.finished_at = now_iso()
    save_manifest(dfs, droot, manifest)
    return result


def _commit(dfs, droot, shard, batch, importer, manifest, fingerprint, result, config) -> None:
    rg = config.get("writer", {}).get("row_group_size", Writer().row_group_size)
    with ShardOutput(dfs, droot, shard, rg) as output:
        kept = 0
        for index, raw in enumerate(batch):
            try:
                row = importer.row(raw, shard, index, manifest.run_id)
            except BadRecord as exc:
                extra = raw.get("pf1m") if isinstance(raw, dict) else None
                known = {
                    name: value
                    for name, value in (extra if isinstance(extra, dict) else {}).items()
                    if isinstance(value, str)
                }  # what this project's own record says about itself, when it says it as text
                key = known.get("key", f"{index:09d}")
                output.add("quarantine", {
                    "uid": known.get("uid", f"{shard}/{key}"), "shard": shard, "key": key,
                    "source": known.get("source"), "task": known.get("task"), "stage": STAGE,
                    "error_class": exc.error_class, "error_text": str(exc), "members": [],
                    "rewrite_raw": known.get("rewrite_raw"), "run_id": manifest.run_id,
                })  # fmt: skip
                result.quarantined += 1
                continue
            output.add("data", row)
            kept += 1
            result.rows += 1
        output.commit(
            run_id=manifest.run_id, fingerprint=fingerprint,
            config_hash=manifest.config_hash, samples_in=len(batch),
        )  # fmt: skip
    manifest.shards[shard] = ShardState(
        url=fingerprint.url, status="done", samples_in=len(batch), kept=kept
    )
    result.shards += 1
