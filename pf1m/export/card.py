"""The dataset card of an `hf` export: README.md with YAML front matter, from the run's merged
stats (the same figures as `pf1m audit`'s stats.json) and run.json (filters, thresholds,
models and their revisions, config hash), plus what the run cannot know (licences, the card's
wording) from the export settings."""

from typing import Any

import yaml

from pf1m.export.reader import Source
from pf1m.filters import registry
from pf1m.schemas.audit import RunStats
from pf1m.schemas.config import RunConfig
from pf1m.schemas.export import ExportConfig, ExportManifest
from pf1m.schemas.stats import Counts


def size_category(n: int) -> str:
    """The Hub's size_categories bucket."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "1M<n<10M"


def model_revisions(run_json: dict[str, Any]) -> dict[str, str]:
    """Revisions recorded in run.json, if this run's pf1m recorded any (keyed by model role or
    hub reference): mappings under keys naming revisions (top level or in the hashed view), and
    the `@SHA` of a hub fingerprint. Older runs have none: the card says `-`."""
    found: dict[str, str] = {}
    hashed = run_json.get("hashed") or {}
    for name, value in (hashed.get("model_fingerprints") or {}).items():
        if isinstance(value, str) and value.startswith("hub:") and "@" in value:
            found[name] = value.rsplit("@", 1)[1]
    for where in (run_json, hashed):
        for key, value in where.items():
            if "revision" in key and isinstance(value, dict):
                found.update({k: str(v) for k, v in value.items() if isinstance(v, str)})
    return found


def models(config: RunConfig, run_json: dict[str, Any]) -> dict[str, dict[str, str | None]]:
    prints = (run_json.get("hashed") or {}).get("model_fingerprints") or {}
    revisions = model_revisions(run_json)
    out = {}
    for name, ref in config.models().items():
        bare = ref.removeprefix("local-dir:").removeprefix("hf-hub:")
        pinned = bare.rsplit("@", 1)[1] if "@" in bare else None
        revision = revisions.get(ref) or revisions.get(bare) or revisions.get(name) or pinned
        out[name] = {"id": ref, "revision": revision, "fingerprint": prints.get(name)}
    return out


def filters(config: RunConfig) -> dict[str, Any]:
    """Which filters each task ran, and every filter's settings (thresholds, models)."""
    f = config.filters
    out: dict[str, Any] = {"scoring": f.scoring, "tasks": {k: list(v) for k, v in f.tasks.items()}}
    for name, flt in registry.load(f.plugins).items():
        section = flt.settings(f)
        dumped = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
        if dumped:  # a filter without settings (change) says nothing here
            out[name] = dumped
    return out


def rewriter_licence(config: RunConfig, settings: ExportConfig) -> str:
    lic = settings.licences
    if config.rewriter.backend in lic.rewriter_by_backend:
        return lic.rewriter_by_backend[config.rewriter.backend]
    model = config.rewriter.model.lower()
    for part, text in lic.rewriter_by_model.items():
        if part.lower() in model:
            return text
    return lic.unknown_rewriter


def _rate(c: Counts) -> float | None:
    return round(c.kept / c.samples_in, 4) if c.samples_in else None


def front_matter(source: Source, manifest: ExportManifest, settings: ExportConfig) -> dict:
    stats: RunStats = source.stats
    card, cfg = settings.card, source.config
    groups = stats.by_group
    sources = sorted({k.split("|", 1)[0] for k in groups})
    tasks = sorted({k.split("|", 1)[1] for k in groups})
    lic = settings.licences
    return {
        "pretty_name": card.pretty_name,
        "language": card.language,
        "license": card.licence,
        "license_name": "pf1m-mixed",
        "task_categories": card.task_categories,
        "size_categories": [size_category(manifest.samples)],
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}
        ],
        "pf1m": {
            "source_run_id": stats.run_id,
            "config_hash": stats.config_hash,
            "complete": stats.complete,
            "shards_total": stats.shards_total,
            "shards_exported": stats.shards_committed,
            "shards_skipped": stats.shards_with_problems,
            "sources": sources,
            "tasks": tasks,
            "counts": {
                "totals": stats.totals.model_dump(),
                "by_group": {k: v.model_dump() for k, v in groups.items()},
            },
            "keep_rates": {
                "total": _rate(stats.totals),
                **{k: _rate(v) for k, v in groups.items()},
            },
            "exported": {
                "samples": manifest.samples,
                "records": manifest.records,
                "multi_turn": None
                if manifest.multi_turn is None
                else manifest.multi_turn.model_dump(),
            },
            "filters": filters(cfg),
            "rewriter": {"backend": cfg.rewriter.backend, "model": cfg.rewriter.model},
            "models": models(cfg, source.run_json),
            "licences": {
                "sources": {s: lic.sources.get(s, lic.unknown_source) for s in sources},
                "rewriter": rewriter_licence(cfg, settings),
            },
        },
    }


def render(source: Source, manifest: ExportManifest, settings: ExportConfig) -> str:
    meta = front_matter(source, manifest, settings)
    p = meta["pf1m"]
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {settings.card.pretty_name}",
        "",
        settings.card.description,
        "",
        "## Counts",
        "",
        "| source | task | in | kept | rejected | quarantined | keep rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in p["counts"]["by_group"].items():
        src, task = key.split("|", 1)
        rate = p["keep_rates"][key]
        lines.append(
            f"| {src} | {task} | {c['samples_in']} | {c['kept']} | {c['rejected']} "
            f"| {c['quarantined']} | {'-' if rate is None else f'{rate:.1%}'} |"
        )
    t = p["counts"]["totals"]
    lines += [
        f"| **total** | | {t['samples_in']} | {t['kept']} | {t['rejected']} "
        f"| {t['quarantined']} | |",
        "",
        f"Exported: {p['exported']['samples']} samples in {p['exported']['records']} records. "
        f"Source run `{p['source_run_id']}`, config hash `{p['config_hash']}`"
        + ("." if p["complete"] else " (incomplete: only committed, verified shards)."),
        "",
        "## Filters",
        "",
        "| task | filters |",
        "|---|---|",
        *[f"| {task} | {', '.join(names)} |" for task, names in p["filters"]["tasks"].items()],
        "",
        "Settings and thresholds are in the front matter (`pf1m.filters`).",
        "",
        "## Models",
        "",
        "| role | model | revision |",
        "|---|---|---|",
        *[f"| {n} | {m['id']} | {m['revision'] or '-'} |" for n, m in p["models"].items()],
        "",
        "## Licences",
        "",
        f"- rewriter: {p['licences']['rewriter']}",
        *[f"- {s}: {text}" for s, text in p["licences"]["sources"].items()],
        "",
        "## Caveats",
        "",
        settings.card.caveats,
        "",
    ]
    return "\n".join(lines)


def read_front_matter(text: str) -> dict:
    """The YAML between the card's leading `---` lines."""
    if not text.startswith("---\n"):
        raise ValueError("no YAML front matter")
    return yaml.safe_load(text[4 : text.index("\n---\n", 4)])
