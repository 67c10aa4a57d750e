"""Commit helpers: temporaries, rename-then-marker, done checks, cleaning, verification."""

import pytest

from pf1m.pipeline.commit import (
    KINDS,
    clean_shard,
    commit_shard,
    is_done,
    read_marker,
    relpath,
    sha256_of,
    tmp_path,
    verify,
)
from pf1m.pipeline.storage import url_to_fs
from pf1m.pipeline.writer import write_file
from pf1m.schemas.commit import InputFingerprint

FP = InputFingerprint(url="file:///in/a.tar", size=10, mtime="1")


@pytest.fixture
def fs():
    return url_to_fs("/")[0]


def write_temporaries(fs, root: str, shard: str) -> dict:
    written = {}
    for kind in KINDS:
        final = f"{root}/{relpath(kind, shard)}"
        fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        rows = 1 if kind != "stats" else None
        written[kind] = write_file(fs, tmp_path(final), kind.encode(), rows)
    return written


def commit_one(fs, root: str, shard: str):
    return commit_shard(
        fs, root, shard, write_temporaries(fs, root, shard),
        run_id="r", fingerprint=FP, config_hash="h", samples_in=1,
    )  # fmt: skip


def test_temporary_names_never_end_in_parquet():
    name = tmp_path("/o/data/x.parquet")
    assert name.startswith("/o/data/x.parquet") and not name.endswith(".parquet")


def test_commit_moves_files_then_writes_marker(fs, tmp_path):
    root = str(tmp_path)
    written = write_temporaries(fs, root, "coco/00001")
    marker = commit_shard(
        fs, root, "coco/00001", written, run_id="r", fingerprint=FP, config_hash="h", samples_in=3
    )
    assert fs.exists(f"{root}/_commits/coco/00001.json")
    assert not fs.glob(f"{root}/**/*.tmp-*")
    for kind in KINDS:
        assert fs.cat(f"{root}/{relpath(kind, 'coco/00001')}") == kind.encode()
    assert read_marker(fs, root, "coco/00001") == marker
    assert marker.files["data"].rows == 1 and marker.files["stats"].rows is None
    assert verify(fs, root, marker) == []


def test_done_needs_same_input_and_config(fs, tmp_path):
    root = str(tmp_path)
    commit_one(fs, root, "s")
    marker = read_marker(fs, root, "s")
    assert is_done(marker, FP, "h")
    assert not is_done(marker, FP.model_copy(update={"size": 11}), "h")
    assert not is_done(marker, FP, "other")
    assert not is_done(read_marker(fs, root, "missing"), FP, "h")


def test_clean_removes_half_commits_and_temporaries(fs, tmp_path):
    root = str(tmp_path)
    written = write_temporaries(fs, root, "s")
    data_tmp = written["data"].path
    fs.mv(data_tmp, f"{root}/{relpath('data', 's')}")  # as if killed after the first rename
    other = write_temporaries(fs, root, "other")
    removed = clean_shard(fs, root, "s")
    assert len(removed) == len(KINDS)
    assert not fs.glob(f"{root}/**/s.*")
    assert all(fs.exists(entry.path) for entry in other.values())


def test_verify_names_the_tampered_shard(fs, tmp_path):
    root = str(tmp_path)
    marker = commit_one(fs, root, "s")
    with fs.open(f"{root}/{relpath('rejected', 's')}", "wb") as f:
        f.write(b"tampered")
    fs.rm(f"{root}/{relpath('stats', 's')}")
    problems = verify(fs, root, marker)
    assert any("s: rejected file" in p and "checksum" in p for p in problems)
    assert any("s: stats file" in p and "missing" in p for p in problems)


def test_entries_are_checksummed_while_written(fs, tmp_path):
    """The commit trusts the writers' checksums (nothing is read back): they must be the
    files' own, for Parquet written in row groups as for a payload written at once."""
    from pf1m.pipeline.writer import RowGroupWriter
    from pf1m.schemas.rows import QUARANTINE_SCHEMA

    root = str(tmp_path)
    writer = RowGroupWriter(fs, f"{root}/q.parquet", QUARANTINE_SCHEMA, row_group_size=2)
    for i in range(5):
        writer.add({"uid": f"s/{i}", "shard": "s", "key": str(i), "stage": "read",
                    "error_class": "E", "error_text": "x", "members": []})  # fmt: skip
    entry = writer.close()
    small = write_file(fs, f"{root}/stats.json", b'{"a": 1}')
    for e in (entry, small):
        assert (e.sha256, e.bytes) == sha256_of(fs, e.path)
    assert entry.rows == 5 and small.rows is None
