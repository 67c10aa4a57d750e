"""The real vLLM engine (CPU build) on the tiny LLaVA, through the Ray actor."""

import pytest

from pf1m.demo.data import encode, make_sample
from pf1m.pipeline.prompt import render_prompt, sample_seed
from pf1m.schemas.config import load_config
from pf1m.schemas.rewrite import RewriteRequest
from tests.conftest import DEMO_CONFIG

pytestmark = pytest.mark.slow


def requests(token: str, n: int = 12) -> list[RewriteRequest]:
    cfg = load_config(DEMO_CONFIG).rewriter
    out = []
    for index in range(n):  # every task type: 0, 1 and 2 images
        key, rec, images, _ = make_sample(index, seed=0)
        prompt = render_prompt(
            cfg.prompt.template,
            cfg.prompt.system,
            rec["instruction"],
            rec["response"],
            len(images),
            token,
        )
        out.append(RewriteRequest(f"t/{key}", prompt, images, sample_seed(0, f"t/{key}")))
    return out


def test_batch_with_images(ray_local, rewriter):
    info = ray_local.get(rewriter[0].info.remote())
    assert info.image_token == "<image>"  # read from the model's processor
    batch = requests(info.image_token)
    results = ray_local.get(rewriter[0].generate.remote(batch))
    assert [r.uid for r in results] == [r.uid for r in batch]
    max_tokens = load_config(DEMO_CONFIG).rewriter.decoding.max_tokens
    for res in results:
        assert res.error_class is None, res.error_text
        assert res.finish_reason in {"stop", "length"}
        assert 0 < res.output_tokens <= max_tokens and res.completion is not None
    by_images = {
        len(req.images): res.prompt_tokens for req, res in zip(batch, results, strict=True)
    }
    # each image expands into the model's 16 patch tokens
    assert by_images[1] - by_images[0] > 16 and by_images[2] - by_images[1] > 16


def test_seed_makes_a_sample_independent_of_its_batch(ray_local, rewriter):
    batch = requests("<image>", n=8)
    alone = ray_local.get(rewriter[0].generate.remote(batch[3:4]))[0]
    together = ray_local.get(rewriter[0].generate.remote(batch))[3]
    assert alone.completion == together.completion


def test_one_bad_request_does_not_fail_its_batch(ray_local, rewriter):
    good = requests("<image>", n=2)
    too_long = RewriteRequest("t/long", "word " * 5000, [], 1)
    broken_image = RewriteRequest("t/img", "<image> hi", [b"not an image"], 1)
    results = ray_local.get(rewriter[0].generate.remote([good[0], too_long, broken_image, good[1]]))
    assert results[0].error_class is None and results[3].error_class is None
    assert results[1].error_class is not None and results[1].completion is None
    assert results[2].error_class == "UnidentifiedImageError"


def test_busy_accounting(ray_local, rewriter):
    ray_local.get(rewriter[0].generate.remote(requests("<image>", n=4)))
    stats = ray_local.get(rewriter[0].busy.remote())
    assert stats.first_request_at is not None and stats.requests_done >= 4
    assert 0 < stats.busy_s <= stats.now - stats.first_request_at


def test_encode_helper_roundtrip():
    from PIL import Image

    img = Image.new("RGB", (4, 4), (1, 2, 3))
    assert encode(img, "png")[:4] == b"\x89PNG"
