"""OUT/report/index.html: one self-contained page (plotly.js inlined, images as data URIs, no
network) that answers "what happened to my data and why".

Sections: summary, funnel (input -> kept, filter by filter), score histograms with their
thresholds (kept and rejected stacked), reward of raw annotations vs rewrites (the paper's
Figure 6 view), keep rate per source and task, token spend, throughput and rewriter busy
fraction over time, and a browsable sample of rows per reason.
"""

import base64
import html
import io
import posixpath
from collections import Counter
from typing import Any

import plotly.graph_objects as go
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem
from PIL import Image

from pf1m.filters import registry
from pf1m.pipeline.audit import ROW_KINDS, Committed, stored_rows
from pf1m.schemas.audit import RunStats
from pf1m.schemas.config import RunConfig
from pf1m.schemas.reasons import Stage

REPORT = "report/index.html"
KEPT, REJECTED = "#2a9d8f", "#e76f51"


def _figure(fig: go.Figure, title: str) -> str:
    fig.update_layout(title=title, height=380, margin=dict(l=50, r=20, t=50, b=40))
    return fig.to_html(full_html=False, include_plotlyjs=False, config={"responsive": True})


def funnel(stats: RunStats, rows: list[dict[str, Any]], filter_order: list[str]) -> str:
    """Samples left after quarantine and after each filter, in the pipeline's order."""
    stages = [("input", stats.totals.samples_in), ("not quarantined", len(rows))]
    failed_by: set[str] = set()
    for name in filter_order:
        failed_by.add(name)
        left = sum(
            1 for r in rows if not any(x.split(":")[0] in failed_by for x in r["reject_reasons"])
        )
        stages.append((f"after {name}", left))
    fig = go.Figure(go.Funnel(y=[s for s, _ in stages], x=[n for _, n in stages]))
    return _figure(fig, "From input to kept, filter by filter")


def _histogram(values_kept, values_rejected, title, threshold=None, label="threshold") -> str:
    fig = go.Figure()
    fig.add_histogram(x=values_kept, name="kept", marker_color=KEPT, nbinsx=40)
    fig.add_histogram(x=values_rejected, name="rejected", marker_color=REJECTED, nbinsx=40)
    fig.update_layout(barmode="stack")
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", annotation_text=f"{label} {threshold}")
    return _figure(fig, title)


def score_histograms(cfg: RunConfig, rows: list[dict[str, Any]]) -> list[str]:
    """Rouge-L, then each configured filter's own figures (pf1m/filters: `histograms`, and the
    label counts of a filter with `labels`)."""

    def split(get) -> tuple[list, list]:
        kept, rejected = [], []
        for r in rows:
            for v in get(r):
                (kept if r["kept"] else rejected).append(v)
        return kept, rejected

    rouge = lambda r: [r["rouge_l"]] if r["rouge_l"] is not None else []  # noqa: E731
    plots = [_histogram(*split(rouge), "Rouge-L (output vs raw annotation)")]
    for f in registry.load(cfg.filters.plugins).values():
        settings = f.settings(cfg.filters)
        if settings is None:
            continue
        for h in f.histograms:
            plots.append(_histogram(*split(h.values), h.title, h.threshold(settings)))
        labels = f.labels
        if labels:
            counts = Counter((r[f.score_field], r["kept"]) for r in rows if r[f.score_field])
            fig = go.Figure()
            for kept, colour, name in ((True, KEPT, "kept"), (False, REJECTED, "rejected")):
                y = [counts[(n, kept)] for n in labels]
                fig.add_bar(x=list(labels), y=y, name=name, marker_color=colour)
            fig.update_layout(barmode="stack")
            plots.append(_figure(fig, f.labels_title))
    return plots


def reward_view(rows: list[dict[str, Any]]) -> str:
    """The paper's Figure 6: rewards of raw annotations against rewards of rewrites."""
    pairs = [r for r in rows if r["reward"] is not None and r["reward_original"] is not None]
    fig = go.Figure()
    fig.add_histogram(x=[r["reward_original"] for r in pairs], name="raw annotation", opacity=0.6)
    fig.add_histogram(x=[r["reward"] for r in pairs], name="rewrite", opacity=0.6)
    fig.update_layout(barmode="overlay")
    return _figure(fig, f"Reward: raw annotations vs rewrites ({len(pairs)} samples)")


def keep_rates(stats: RunStats) -> str:
    """Keep rate per source|task, with the counts behind each rate."""
    keys = list(stats.by_group)
    counts = [stats.by_group[k] for k in keys]
    rates = [c.kept / c.samples_in if c.samples_in else 0.0 for c in counts]
    text = [
        f"{r:.0%} ({c.kept} kept, {c.rejected} rejected, {c.quarantined} quarantined of "
        f"{c.samples_in})"
        for r, c in zip(rates, counts, strict=True)
    ]
    fig = go.Figure(go.Bar(y=keys, x=rates, orientation="h", text=text, marker_color=KEPT))
    fig.update_layout(xaxis=dict(tickformat=".0%", range=[0, 1]))
    return _figure(fig, "Keep rate per source|task")


def token_spend(stats: RunStats) -> str:
    t = stats.tokens
    names = ["prompt", "output on kept rows", "output on rejected rows"]
    values = [t.prompt, t.output - t.output_on_rejected, t.output_on_rejected]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=["#8d99ae", KEPT, REJECTED]))
    return _figure(fig, f"Tokens ({t.output_on_rejected} output tokens spent on rejected rows)")


def over_time(run: Committed) -> str:
    timeline = run.manifest.timeline
    fig = go.Figure()
    if timeline:
        x = [p["at"] for p in timeline]
        fig.add_scatter(x=x, y=[p["samples"] for p in timeline], name="samples processed")
        fig.add_scatter(x=x, y=[p["busy"] for p in timeline], name="rewriter busy fraction",
                        yaxis="y2")  # fmt: skip
        fig.update_layout(yaxis2=dict(overlaying="y", side="right", range=[0, 1.05]))
    commits = sorted((m.committed_at, m.samples_in) for m in run.markers.values())
    total, xs, ys = 0, [], []
    for at, n in commits:
        total += n
        xs.append(at)
        ys.append(total)
    fig.add_scatter(x=xs, y=ys, name="samples committed", mode="lines+markers")
    return _figure(fig, "Throughput and rewriter busy fraction over time")


def _thumbnail(payload: bytes | None, size: int) -> str:
    if not payload:
        return "<span class=muted>(image not embedded)</span>"
    with Image.open(io.BytesIO(payload)) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img alt="sample image" src="data:image/jpeg;base64,{data}">'


def _sample_card(row: dict[str, Any], size: int) -> str:
    e = html.escape
    images = "".join(_thumbnail(img["bytes"], size) for img in row["images"] or [])
    paragraphs = "".join(
        f"<li><b>{p['clip_score']:.2f}</b> {e(p['text'])}</li>" for p in row["paragraphs"] or []
    )
    scores = {
        "rouge_l": row["rouge_l"], "sts": row["sts"], "nli": row["nli_label"],
        "reward": row["reward"], "reward_original": row["reward_original"],
        "finish": row["finish_reason"], "tokens": row["output_tokens"],
    }  # fmt: skip
    score_text = ", ".join(
        f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in scores.items()
        if v is not None
    )
    reasons = ", ".join(row["reject_reasons"]) or "kept"
    return (
        f'<div class="card"><div class="uid">{e(row["uid"])} · {e(row["task"] or "")} · '
        f"<b>{e(reasons)}</b></div><div class=images>{images}</div>"
        f"<p><b>instruction</b> {e(row['instruction'] or '')}</p>"
        f"<p><b>raw annotation</b> {e(row['original'] or '')}</p>"
        f"<p><b>rewrite</b> {e(row['rewrite_raw'] or '')}</p>"
        + (f"<p><b>paragraphs (CLIP)</b></p><ul>{paragraphs}</ul>" if paragraphs else "")
        + f"<p class=muted>{e(score_text)}</p></div>"
    )


def samples(fs, root: str, run: Committed, rows: list[dict], per_reason: int, size: int) -> str:
    """Up to `per_reason` rows for "kept" and for each reason code, first by uid."""
    chosen: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r["uid"]):
        for label in r["reject_reasons"] or ["kept"]:
            picked = chosen.setdefault(label, [])
            if len(picked) < per_reason:
                picked.append(r["uid"])
    wanted = {uid for uids in chosen.values() for uid in uids}
    by_shard: dict[str, list[str]] = {}
    for r in rows:
        if r["uid"] in wanted:
            by_shard.setdefault(r["shard"], []).append(r["uid"])
    full: dict[str, dict] = {}
    for shard, uids in by_shard.items():  # read only the chosen rows: images are large
        for kind in ROW_KINDS:
            path = posixpath.join(root, run.markers[shard].files[kind].path)
            with fs.open(path, "rb") as f:
                table = pq.read_table(f, filters=[("uid", "in", uids)])
            full.update((row["uid"], row) for row in table.to_pylist())
    parts = []
    for label in sorted(chosen, key=lambda k: (k != "kept", k)):
        cards = "".join(_sample_card(full[uid], size) for uid in chosen[label] if uid in full)
        anchor = html.escape(label.replace(":", "-"))
        parts.append(
            f'<details class="reason" id="reason-{anchor}"><summary>{html.escape(label)} '
            f"({len(chosen[label])} shown)</summary>{cards}</details>"
        )
    return "".join(parts)


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{margin-bottom:0}.muted{color:#777}section{margin:2em 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:1em}
table{border-collapse:collapse}
td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child{text-align:left}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em;margin:.6em 0}
.card img{max-height:160px;margin-right:.4em}.uid{font-family:monospace;font-size:.9em}
details.reason summary{cursor:pointer;font-weight:600;margin:.4em 0}
.problem{color:#b00020;font-weight:600}
"""


def _summary_table(stats: RunStats) -> str:
    rows = [*stats.by_group.items(), ("TOTAL", stats.totals)]
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{c.samples_in}</td><td>{c.kept}</td>"
        f"<td>{c.rejected}</td><td>{c.quarantined}</td>"
        f"<td>{(c.kept / c.samples_in if c.samples_in else 0):.1%}</td></tr>"
        for k, c in rows
    )
    head = "<tr><th>source|task</th><th>in</th><th>kept</th><th>rejected</th>"
    return f"<table>{head}<th>quarantined</th><th>keep rate</th></tr>{body}</table>"


def write_report(
    fs: AbstractFileSystem,
    root: str,
    run: Committed,
    stats: RunStats,
    cfg: RunConfig,
    per_reason: int = 5,
    thumbnail_px: int = 256,
) -> str:
    """Build and write OUT/report/index.html; returns its path."""
    from plotly.offline import get_plotlyjs

    verified = {s: run.markers[s] for s in stats.shards_committed}  # never a damaged file
    run = Committed(run.manifest, verified)
    rows = [r for m in run.markers.values() for r in stored_rows(fs, root, m)]
    note = (
        ""
        if stats.complete
        else f"<p class=problem>{len(stats.shards_committed)} of {stats.shards_total} shards "
        "committed: figures cover committed shards only.</p>"
    )
    problems = "".join(f"<p class=problem>{html.escape(p)}</p>" for p in stats.problems)
    stages = ", ".join(f"{k} {v}" for k, v in sorted(stats.totals.quarantine_stages.items()))
    sections = [
        ("summary", "Summary", note + problems + _summary_table(stats)
         + f"<p class=muted>quarantined by stage: {html.escape(stages or 'none')} "
           f"(stages: {', '.join(s.value for s in Stage)}, score:NAME)</p>"),
        ("funnel", "Funnel", funnel(stats, rows, list(registry.load(cfg.filters.plugins)))),
        ("scores", "Scores and thresholds", '<div class="grid">'
         + "".join(score_histograms(cfg, rows)) + "</div>"),
        ("reward", "Reward: raw vs rewrite", reward_view(rows)),
        ("keep-rate", "Keep rate per source and task", keep_rates(stats)),
        ("tokens", "Token spend", token_spend(stats)),
        ("throughput", "Throughput over time", over_time(run)),
        ("samples", "Samples per reason", samples(fs, root, run, rows, per_reason, thumbnail_px)),
    ]  # fmt: skip
    body = "".join(
        f'<section id="{sid}"><h2>{title}</h2>{content}</section>'
        for sid, title, content in sections
    )
    page = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>pf1m report {html.escape(stats.run_id)}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<h1>pf1m run report</h1><p class=muted>run {html.escape(stats.run_id)} · "
        f"config {stats.config_hash} · generated {stats.generated_at}</p>{body}</body></html>"
    )
    path = posixpath.join(root, REPORT)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(page.encode())
    return path
