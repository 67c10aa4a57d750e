"""The bad-input corpus through a whole run: every case lands where DESIGN.md says, with its
error class; nothing crashes the run and nothing disappears (conservation per shard)."""

import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pf1m.pipeline.driver import Driver
from pf1m.schemas.run import ExitCode
from tests.conftest import demo_config
from tests.tarutil import png, record, write_tar

pytestmark = pytest.mark.slow


def bomb() -> bytes:
    """A real decompression bomb: a 1-bit PNG of 180 M pixels (over twice PIL's limit) that
    compresses to ~30 KB; PIL refuses it from its header, before decoding any pixel."""
    buf = io.BytesIO()
    Image.new("1", (15000, 12000)).save(buf, format="PNG")
    return buf.getvalue()


# key -> (members, stage, error class); a member that cannot belong to a sample is its own key
CORPUS = {
    "nojson": ([("nojson.png", png())], "decode", "MissingJson"),
    "badjson": ([("badjson.json", b"{nope"), ("badjson.png", png())], "decode", "JSONDecodeError"),
    "latin1": (
        [("latin1.json", b'{"instruction": "q", "response": "caf\xe9", "task": "vqa"}')],
        "decode",
        "UnicodeDecodeError",
    ),
    "types": (
        [("types.json", b'{"instruction": 1, "response": "r", "task": "vqa"}')],
        "validate",
        "ValidationError",
    ),
    "task": (
        [("task.json", record(task="poetry")), ("task.png", png())],
        "validate",
        "ValidationError",
    ),
    "noimage": ([("noimage.json", record())], "validate", "MissingImage"),
    "markers": (
        [("markers.json", record(instruction="<image><image> q")), ("markers.png", png())],
        "validate",
        "ImageCountMismatch",
    ),
    "corrupt": (
        [("corrupt.json", record()), ("corrupt.png", b"\x89PNG not really")],
        "decode",
        "UnidentifiedImageError",
    ),
    "bomb": ([("bomb.json", record()), ("bomb.png", bomb())], "decode", "DecompressionBombError"),
    "noinstr": (
        [("noinstr.json", record(instruction="  ")), ("noinstr.png", png())],
        "validate",
        "ValidationError",
    ),
    "noresp": (
        [("noresp.json", record(response="")), ("noresp.png", png())],
        "validate",
        "ValidationError",
    ),
    "pickle": (
        [("pickle.json", record()), ("pickle.png", png()), ("pickle.pkl", b"\x80\x04K\x01.")],
        "read",
        "UnsafeMember",
    ),
    "../evil.json": ([("../evil.json", record())], "read", "UnsafeMemberPath"),
    "/etc/evil.json": ([("/etc/evil.json", record())], "read", "UnsafeMemberPath"),
    "README": ([("README", b"hello")], "read", "KeylessMember"),
}


@pytest.fixture(scope="module")
def corpus_run(ray_local, rewriter, scorers, demo_models, tmp_path_factory):
    shards = tmp_path_factory.mktemp("bad-shards")
    members = [m for ms, _, _ in CORPUS.values() for m in ms]
    good = [("good.json", record()), ("good.png", png())]
    huge = record(task="text", instruction="Say it.", response="word " * 600_000)  # 3 MB
    dupe = [("dupe.json", record()), ("dupe.png", png())]
    write_tar(shards / "corpus.tar", dupe + members + good + [("huge.json", huge)] + dupe)
    whole = write_tar(shards / "whole.tar", good + [("k.png", png(size=(64, 64)))])
    (shards / "truncated.tar").write_bytes(whole.read_bytes()[:1000])
    (shards / "nottar.tar").write_bytes(b"this is not a tar file at all" * 40)
    write_tar(shards / "empty.tar", [])
    out = tmp_path_factory.mktemp("bad-out")
    cfg = demo_config(shards, demo_models, out)
    result = Driver(cfg, quiet=True, rewriters=rewriter, scorers=scorers).run()
    return result, out


def test_unreadable_shards_fail_by_name_and_the_rest_finish(corpus_run):
    result, out = corpus_run
    assert result.exit_code == ExitCode.PARTIAL
    failed = result.summary["shards_failed"]
    assert set(failed) == {"truncated", "nottar"}
    assert all("truncated" in failed["truncated"] or "ReadError" in e for e in failed.values())
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "partial"
    assert {s for s, st in run["shards"].items() if st["status"] == "failed"} == set(failed)
    for shard in failed:  # nothing written for a failed shard
        assert not list(out.rglob(f"{shard}.*"))
    empty = json.loads((out / "_commits" / "empty.json").read_text())
    assert empty["samples_in"] == 0 and all(f["rows"] in (0, None) for f in empty["files"].values())


def test_every_bad_sample_lands_in_quarantine_with_its_class(corpus_run):
    _, out = corpus_run
    rows = pq.read_table(out / "quarantine" / "corpus.parquet").to_pylist()
    got = {r["key"]: (r["stage"], r["error_class"]) for r in rows}
    for key, (_, stage, error_class) in CORPUS.items():
        assert got.get(key) == (stage, error_class), key
    assert got["dupe"] == ("read", "DuplicateKey")  # the second copy; the first is processed
    assert got["huge"][0] == "rewrite"  # longer than the model's context: the engine refuses it
    assert all(r["members"] or r["key"] == "huge" for r in rows)  # names and sizes recorded


def test_conservation_in_the_corpus_shard(corpus_run):
    _, out = corpus_run
    marker = json.loads((out / "_commits" / "corpus.json").read_text())
    rows = {k: marker["files"][k]["rows"] for k in ("data", "rejected", "quarantine")}
    assert marker["samples_in"] == sum(rows.values())
    assert rows["data"] + rows["rejected"] == 2  # `good` and the first `dupe`
    assert rows["quarantine"] == len(CORPUS) + 2  # + huge + the second `dupe`
