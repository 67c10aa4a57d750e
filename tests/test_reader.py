"""The tar reader: samples grouped by key; every bad input becomes a quarantine record."""

import io
import tarfile

import pytest
from PIL import Image

from pf1m.pipeline.reader import Bad, Sample, read_samples
from tests.tarutil import png, record, write_tar


def read(path, **kw):
    with open(path, "rb") as f:
        return list(read_samples(f, **kw))


def test_groups_members_by_key_and_orders_indexed_images(tmp_path):
    a, b = png((1, 2, 3)), png((4, 5, 6))
    path = write_tar(
        tmp_path / "s.tar",
        [
            ("dir/k1.json", record()),
            ("dir/k1.png", a),
            ("k2.json", record(task="change_caption", instruction="<image><image> diff?")),
            ("k2.1.png", b),
            ("k2.0.png", a),
            ("k3.json", record(task="text", instruction="Hi?", source="mine")),
        ],
    )
    out = read(path, max_images=2)
    assert [type(o) for o in out] == [Sample, Sample, Sample]
    assert out[0].key == "dir/k1" and out[0].images == [a] and out[0].image_names == ["dir/k1.png"]
    assert out[1].images == [a, b] and out[1].image_names == ["k2.0.png", "k2.1.png"]
    assert out[2].images == [] and out[2].source == "mine"
    assert read(path, default_source="override")[2].source == "override"


BAD_CASES = {
    "no json": ([("k.png", png())], "decode", "MissingJson"),
    "invalid json": ([("k.json", b"{nope"), ("k.png", png())], "decode", "JSONDecodeError"),
    "non utf-8": ([("k.json", b"\xff\xfe{}"), ("k.png", png())], "decode", "UnicodeDecodeError"),
    "wrong types": (
        [("k.json", b'{"instruction": 1, "response": "r", "task": "vqa"}')],
        "validate",
        "ValidationError",
    ),
    "unknown task": (
        [("k.json", record(task="poetry")), ("k.png", png())],
        "validate",
        "ValidationError",
    ),
    "empty response": (
        [("k.json", record(response="  ")), ("k.png", png())],
        "validate",
        "ValidationError",
    ),
    "missing image": ([("k.json", record())], "validate", "MissingImage"),
    "marker mismatch": (
        [("k.json", record(instruction="<image><image> q")), ("k.png", png())],
        "validate",
        "ImageCountMismatch",
    ),
    "corrupt image": (
        [("k.json", record()), ("k.png", b"\x89PNG not really")],
        "decode",
        "UnidentifiedImageError",
    ),
    "pickle member": (
        [("k.json", record()), ("k.png", png()), ("k.pkl", b"\x80\x04K\x01.")],
        "read",
        "UnsafeMember",
    ),
    "keyless": ([("README", b"hello")], "read", "KeylessMember"),
    "dotdot path": ([("../evil.json", record())], "read", "UnsafeMemberPath"),
    "absolute path": ([("/etc/evil.json", record())], "read", "UnsafeMemberPath"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_samples_are_quarantined_with_stage_and_class(tmp_path, case):
    members, stage, error_class = BAD_CASES[case]
    good = [("ok.json", record()), ("ok.png", png())]
    out = read(write_tar(tmp_path / "s.tar", members + good))
    bad = [o for o in out if isinstance(o, Bad)]
    assert len(bad) == 1 and (bad[0].stage, bad[0].error_class) == (stage, error_class)
    assert [o.key for o in out if isinstance(o, Sample)] == ["ok"]


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    out = read(write_tar(tmp_path / "s.tar", [("k.json", record()), ("k.png", png(size=(8, 8)))]))
    assert out[0].error_class in {"DecompressionBombError", "DecompressionBombWarning"}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_quarantined(tmp_path, fmt):
    """The header reads fine, the pixel data stops early: only a full decode notices (PIL's
    `verify()` passes such a JPEG), and the sample must not reach the rewriter."""
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, format=fmt)
    cut = buf.getvalue()[: len(buf.getvalue()) * 2 // 3]
    members = [("k.json", record()), (f"k.{fmt.lower()}", cut), ("ok.json", record())]
    out = read(write_tar(tmp_path / "s.tar", [*members, ("ok.png", png())]))
    assert [(type(o).__name__, o.key) for o in out] == [("Bad", "k"), ("Sample", "ok")]
    assert (out[0].stage, out[0].error_class) == ("decode", "OSError")


def test_repeated_key_is_quarantined_not_merged(tmp_path):
    members = [("k.json", record()), ("k.png", png()), ("x.json", record()), ("x.png", png())]
    out = read(write_tar(tmp_path / "s.tar", members + [("k.json", record()), ("k.png", png())]))
    assert [type(o).__name__ for o in out] == ["Sample", "Sample", "Bad"]
    assert out[2].error_class == "DuplicateKey"


def test_truncated_and_non_tar_fail_the_shard(tmp_path):
    path = write_tar(
        tmp_path / "s.tar", [("k.json", record()), ("k.png", png((9, 9, 9), (64, 64)))]
    )
    truncated = tmp_path / "t.tar"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(tarfile.ReadError):
        read(truncated)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(tarfile.ReadError):
        read(junk)


def test_empty_tar_has_no_samples(tmp_path):
    assert read(write_tar(tmp_path / "e.tar", [])) == []
