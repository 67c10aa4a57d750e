"""`pf1m audit` and `pf1m refilter`: figures recomputed independently from the Parquet files,
verification that names a tampered shard, an audit of a run in progress, and re-decisions
that move rows exactly as the new thresholds say, without loading any model. The slow tests
share one run made on Ray; the others audit a small committed run kept in tests/data."""

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pf1m.jobs.cli import main
from pf1m.pipeline.audit import audit
from pf1m.pipeline.driver import Driver
from pf1m.pipeline.storage import url_to_fs
from pf1m.schemas.run import ExitCode
from pf1m.schemas.stats import Counts, ShardStats
from tests.conftest import ROOT, demo_config
from tests.tarutil import png, record, write_tar

SMALL_RUN = Path(__file__).parent / "data" / "run-before-revisions" / "run"  # shard 00000


@pytest.fixture(scope="module")
def run_dir(ray_local, rewriter, scorers, demo_models, demo_shards, tmp_path_factory) -> Path:
    """Demo shards (6 samples each) and a shard whose samples fail at several stages."""
    shards = tmp_path_factory.mktemp("audit-in")
    for tar in sorted(demo_shards.glob("*.tar")):
        shutil.copy(tar, shards / tar.name)
    huge = record(task="text", instruction="Say it.", response="word " * 5000, source="huge-src")
    write_tar(
        shards / "mixed.tar",
        [
            ("good.json", record(source="mixed-src")), ("good.png", png()),
            ("nojson.png", png()),
            ("badtask.json", record(task="poetry")), ("badtask.png", png()),
            ("huge.json", huge),
        ],
    )  # fmt: skip
    out = tmp_path_factory.mktemp("audit-out")
    cfg = demo_config(shards, demo_models, out, "limit_per_shard=6")  # scoring: cheap_first
    assert Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run().exit_code == 0
    return out


def table(out: Path, kind: str) -> list[dict]:
    return [r for p in sorted((out / kind).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def expected_groups(out: Path) -> dict[str, dict]:
    """Per source|task figures computed from the Parquet files alone."""
    groups: dict[str, dict] = {}

    def group(row) -> dict:
        key = f"{row['source'] or 'unknown'}|{row['task'] or 'unknown'}"
        return groups.setdefault(
            key, {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0,
                  "reasons": Counter(), "stages": Counter()}
        )  # fmt: skip

    for kind in ("data", "rejected"):
        for row in table(out, kind):
            g = group(row)
            g["in"] += 1
            g["kept" if kind == "data" else "rejected"] += 1
            g["reasons"].update(row["reject_reasons"])
    for row in table(out, "quarantine"):
        g = group(row)
        g["in"] += 1
        g["quarantined"] += 1
        g["stages"][row["stage"]] += 1
    return groups


@pytest.mark.slow
def test_stats_and_table_equal_counts_from_the_files(run_dir, capsys):
    assert main(["audit", str(run_dir)]) == ExitCode.OK
    printed = capsys.readouterr().out
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["version"] == "1" and stats["complete"] and stats["problems"] == []
    expected = expected_groups(run_dir)
    assert set(stats["by_group"]) == set(expected)
    assert {"huge-src|text", "unknown|unknown"} <= set(expected)  # quarantine grouped too
    for key, e in expected.items():
        got = stats["by_group"][key]
        assert (got["samples_in"], got["kept"], got["rejected"], got["quarantined"]) == (
            e["in"],
            e["kept"],
            e["rejected"],
            e["quarantined"],
        ), key
        assert got["reasons"] == dict(e["reasons"]) and got["quarantine_stages"] == dict(
            e["stages"]
        )
        line = next(ln for ln in printed.splitlines() if ln.startswith(key + " "))
        assert line.split()[1:5] == [str(e[k]) for k in ("in", "kept", "rejected", "quarantined")]
        for code, n in e["reasons"].items():
            assert any(ln.split() == [key, code, str(n)] for ln in printed.splitlines()), code
    assert (run_dir / "report" / "index.html").stat().st_size > 100_000  # plotly inlined


@pytest.mark.slow
def test_tampered_file_fails_verification_naming_the_shard(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    victim = copy / "rejected" / "00002.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert main(["audit", str(copy)]) == ExitCode.ERROR
    out = capsys.readouterr().out
    assert "PROBLEM: 00002: rejected file rejected/00002.parquet does not match its checksum" in out
    stats = json.loads((copy / "stats.json").read_text())
    assert stats["shards_with_problems"] == ["00002"] and not stats["complete"]
    assert "00002" not in stats["shards_committed"]


@pytest.mark.slow
def test_audit_of_a_run_in_progress_counts_committed_shards_only(run_dir, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "_commits" / "mixed.json").unlink()  # as if that shard were still running
    assert main(["audit", str(copy)]) == ExitCode.PARTIAL
    assert "NOTE: 4 of 5 shards committed and verified" in capsys.readouterr().out
    stats = json.loads((copy / "stats.json").read_text())
    assert not stats["complete"] and "mixed" not in stats["shards_committed"]
    assert stats["totals"]["samples_in"] == 24


def uids(out: Path, kind: str) -> set[str]:
    return {r["uid"] for r in table(out, kind)}


@pytest.mark.slow
def test_refilter_moves_rows_exactly_as_the_threshold_says(run_dir, tmp_path, capsys):
    committed_files = [p for d in ("data", "rejected", "quarantine", "_commits")
                       for p in (run_dir / d).glob("*")]  # fmt: skip
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in committed_files}
    new = tmp_path / "sts05"
    assert (
        main(["refilter", str(run_dir), "--set", "filters.sts.threshold=0.5", "--to", str(new)])
        == 0
    )
    printed = capsys.readouterr().out
    old_rows = {r["uid"]: r for k in ("data", "rejected") for r in table(run_dir, k)}
    expected_kept = set()
    for uid, r in old_rows.items():
        others = [x for x in r["reject_reasons"] if not x.startswith("sts:")]
        sts_fails = r["sts"] is not None and r["sts"] < 0.5
        if not others and not sts_fails:
            expected_kept.add(uid)
    assert uids(new, "data") == expected_kept
    assert uids(new, "rejected") == set(old_rows) - expected_kept
    assert uids(new, "quarantine") == uids(run_dir, "quarantine")
    moved = len(uids(run_dir, "data") - expected_kept)
    assert moved > 0 and f"moved to rejected/ {moved}" in printed
    assert json.loads((new / "run.json").read_text())["refiltered_from"] == str(run_dir)
    assert main(["audit", str(new)]) == ExitCode.OK  # its own commits verify
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in committed_files} == before


@pytest.mark.slow
def test_refilter_rebuilds_output_for_a_new_clip_threshold(run_dir, tmp_path, capsys):
    rows = [r for k in ("data", "rejected") for r in table(run_dir, k) if r["paragraphs"]]
    scores = sorted(p["clip_score"] for r in rows for p in r["paragraphs"])
    threshold = scores[len(scores) // 2]  # a median: some paragraphs go, some stay
    new = tmp_path / "clip"
    args = ["refilter", str(run_dir), "--set", f"filters.clip_paragraph.threshold={threshold}"]
    assert main([*args, "--to", str(new)]) == 0
    printed = capsys.readouterr().out
    after = {r["uid"]: r for k in ("data", "rejected") for r in table(new, k)}
    stale = 0
    for r in rows:
        kept = [p["text"] for p in r["paragraphs"] if p["clip_score"] >= threshold]
        if len(r["paragraphs"]) < 2:
            expected = r["rewrite_raw"]
        else:
            expected = "\n\n".join(kept)
        assert after[r["uid"]]["output"] == expected, r["uid"]
        if len(r["paragraphs"]) >= 2 and not kept:
            assert "clip_paragraph:all_removed" in after[r["uid"]]["reject_reasons"]
        stale += r["reward"] is not None and expected != r["output"]
    assert f"reward computed on an output the new CLIP threshold rebuilt {stale}" in printed


@pytest.mark.slow
def test_refilter_counts_unscored_rows_and_loads_no_model(run_dir, tmp_path):
    """A wider length window lets through rows that cheap_first never scored (a rule had
    rejected them): they become `FILTER:unscored`. Run in a fresh interpreter to see which
    modules the command imported."""
    new = tmp_path / "wide"
    code = (
        "import sys; from pf1m.jobs.cli import main; "
        f"rc = main(['refilter', {str(run_dir)!r}, '--set', 'filters.length.max_words=60', "
        f"'--to', {str(new)!r}]); "
        "heavy = [m for m in ('torch', 'vllm', 'transformers', 'sentence_transformers', "
        "'open_clip', 'ray') if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    rejected = table(new, "rejected")
    unscored = [r for r in rejected if any(x.endswith(":unscored") for x in r["reject_reasons"])]
    assert f"unscored (a new decision needs a score never computed) {len(unscored)}" in proc.stdout
    was_too_long = {
        r["uid"] for k in ("data", "rejected") for r in table(run_dir, k)
        if r["reject_reasons"] == ["length:too_long"]  # every task uses a model filter
    }  # fmt: skip
    assert was_too_long and {r["uid"] for r in unscored} == was_too_long


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    """Debian's chromium (installed by `make test`) opens the report offline: every section is
    there, plots and sample images render, and the console stays clean."""
    from playwright.sync_api import sync_playwright

    assert main(["audit", str(run_dir)]) == ExitCode.OK
    report = run_dir / "report" / "index.html"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route(
            "**/*",
            lambda route: (
                route.abort() if not route.request.url.startswith("file:") else route.continue_()
            ),
        )  # noqa: E501
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        for section in ("summary", "funnel", "scores", "reward", "keep-rate", "tokens",
                        "throughput", "samples"):  # fmt: skip
            assert page.locator(f"section#{section}").count() == 1, section
        assert page.locator(".js-plotly-plot").count() >= 8
        assert page.locator(".js-plotly-plot .main-svg").count() >= 8  # drawn, not just divs
        page.locator("details.reason").first.evaluate("d => d.open = true")
        first_image = page.locator("details.reason img").first
        assert first_image.evaluate("img => img.complete && img.naturalWidth > 0")
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=False)
        browser.close()
    assert errors == []
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 900) and len(img.convert("L").getcolors()) > 20  # not blank


@pytest.mark.slow
def test_refilter_without_changes_reproduces_every_decision(run_dir, tmp_path):
    """`redecide` under the run's own config gives back each stored row's decision."""
    new = tmp_path / "same"
    assert main(["refilter", str(run_dir), "--to", str(new)]) == 0
    for kind in ("data", "rejected"):
        old = {r["uid"]: (r["output"], r["reject_reasons"]) for r in table(run_dir, kind)}
        assert {r["uid"]: (r["output"], r["reject_reasons"]) for r in table(new, kind)} == old


@pytest.fixture
def small_run(tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(SMALL_RUN, copy)
    return copy


def test_audit_parses_each_shard_stats_once_and_reports_its_figures(small_run, monkeypatch):
    shard = ShardStats.model_validate_json((small_run / "stats" / "00000.json").read_bytes())
    parse = ShardStats.model_validate_json
    parsed = []

    def counting(data: bytes, **kw) -> ShardStats:
        parsed.append(data)
        return parse(data, **kw)

    monkeypatch.setattr(ShardStats, "model_validate_json", staticmethod(counting))
    stats = audit(*url_to_fs(str(small_run)))
    assert len(parsed) == 1  # verification's parse is the one merged
    assert stats.complete and stats.problems == [] and stats.shards_committed == ["00000"]
    assert (stats.totals, stats.tokens, stats.finish_reasons) == (
        shard.totals,
        shard.tokens,
        shard.finish_reasons,
    )
    assert stats.by_group == dict(sorted(shard.by_group.items()))


def test_stats_file_disagreeing_with_the_shards_files_is_left_out(small_run):
    """Checksums match (the stats file was rewritten with its marker), the counts do not."""
    path = small_run / "stats" / "00000.json"
    shard = ShardStats.model_validate_json(path.read_bytes())
    shard.totals.kept += 1
    path.write_text(shard.model_dump_json())
    marker_path = small_run / "_commits" / "00000.json"
    marker = json.loads(marker_path.read_text())
    marker["files"]["stats"].update(
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size
    )
    marker_path.write_text(json.dumps(marker))
    stats = audit(*url_to_fs(str(small_run)))
    assert stats.problems == ["00000: stats file disagrees with the shard's files"]
    assert stats.shards_with_problems == ["00000"] and stats.shards_committed == []
    assert not stats.complete and stats.totals == Counts()
