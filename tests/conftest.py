"""Shared fixtures. The slow ones start one local Ray and one vLLM rewriter replica per test
session (engine start-up is ~30 s); every slow test reuses them."""

import json
import os
from pathlib import Path

import pytest

from pf1m.schemas.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "pf1m" / "configs" / "demo.yaml"
PAPER_CONFIG = ROOT / "pf1m" / "configs" / "paper.yaml"


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, Path]:
    from pf1m.demo.models import build_all

    return build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory) -> Path:
    from pf1m.demo.data import write_shards

    out = tmp_path_factory.mktemp("shards")
    write_shards(out, samples=84, shards=4, seed=0)
    return out


def demo_config(shards: Path, models: dict[str, Path], out: Path, *extra: str) -> RunConfig:
    from pf1m.jobs.cli import demo_model_overrides

    overrides = [f"input={shards}/*.tar", f"output={out}"]
    overrides += demo_model_overrides(models["rewriter"].parent)
    return load_config(DEMO_CONFIG, [*overrides, *extra])


@pytest.fixture(scope="session")
def ray_local():
    import ray

    from pf1m.pipeline.local_ray import start_local_ray

    os.environ.pop("RAY_ADDRESS", None)
    start_local_ray()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def scorers(ray_local, demo_models, demo_shards, tmp_path_factory):
    """One scorer actor holding the four tiny/real scorer models, for the whole session."""
    from pf1m.pipeline.driver import absolutize, start_scorers

    cfg = absolutize(demo_config(demo_shards, demo_models, tmp_path_factory.mktemp("unused")))
    by_name = start_scorers(cfg, "tests")
    actors = list({id(a): a for rs in by_name.values() for a in rs}.values())
    ray_local.get([a.names.remote() for a in actors])
    yield by_name
    for actor in actors:
        ray_local.kill(actor)


# One actor for every scorer, on a tenth of a CPU (the session's replicas hold most of the two).
ONE_SCORER_GROUP = "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.1}]"


@pytest.fixture(scope="session")
def deterministic_scorers(ray_local, demo_models, demo_shards, tmp_path_factory):
    """Scorers for `rewriter.deterministic` runs (one item per forward pass), shared by every
    such run of the session instead of each driver starting its own."""
    from pf1m.pipeline.driver import absolutize, start_scorers

    out = tmp_path_factory.mktemp("unused")
    cfg = demo_config(
        demo_shards, demo_models, out, "rewriter.deterministic=true", ONE_SCORER_GROUP
    )
    by_name = start_scorers(absolutize(cfg), "tests-deterministic")
    actors = list({id(a): a for rs in by_name.values() for a in rs}.values())
    ray_local.get([a.names.remote() for a in actors])
    yield by_name
    for actor in actors:
        ray_local.kill(actor)


# The chat-prompt runs (tests/test_chat_pipeline.py): the tiny Qwen2.5-VL-shaped chat model
# with a rewrite instruction of its own, a small context and a large image size, so one
# oversized image overflows it. A twentieth of a CPU (a scheduling token: the engine's processes
# run regardless), so that other tests' actors and shard tasks still fit beside the session's.
CHAT_TEMPLATE = "Question: {instruction}\nDraft answer: {raw}\nRewrite the draft politely."
CHAT_SETTINGS = (
    "rewriter.prompt.style=chat",
    f"rewriter.prompt.template={json.dumps(CHAT_TEMPLATE)}",
    "rewriter.prompt.system=Be polite.",
    "rewriter.prompt.answer_marker=''",
    "rewriter.max_model_len=512",
    "rewriter.image.max_pixels=409600",
    "resources.cpus_per_replica=0.05",
)


def chat_demo_config(shards: Path, models: dict[str, Path], out: Path, *extra: str) -> RunConfig:
    chat = [f"rewriter.model={models['chat']}", *CHAT_SETTINGS]
    return demo_config(shards, models, out, *chat, *extra)


@pytest.fixture(scope="session")
def chat_rewriter(ray_local, demo_models, demo_shards, tmp_path_factory):
    """One vLLM replica of the tiny chat model for the whole session (the only other engine)."""
    from pf1m.pipeline.driver import absolutize, start_rewriters

    out = tmp_path_factory.mktemp("unused")
    cfg = absolutize(chat_demo_config(demo_shards, demo_models, out))
    handles = start_rewriters(cfg, "tests-chat")
    ray_local.get(handles[0].info.remote())
    yield handles
    for handle in handles:
        ray_local.kill(handle)


@pytest.fixture(scope="session")
def rewriter(ray_local, demo_models, demo_shards, tmp_path_factory):
    """One replica for the whole session, started from the demo config."""
    from pf1m.pipeline.driver import absolutize, start_rewriters

    cfg = absolutize(demo_config(demo_shards, demo_models, tmp_path_factory.mktemp("unused")))
    handles = start_rewriters(cfg, "tests")
    ray_local.get(handles[0].info.remote())
    yield handles
    for handle in handles:
        ray_local.kill(handle)
