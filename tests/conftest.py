"""Shared fixtures. The slow ones start one local Ray per test session, and the long-lived
actors (the vLLM rewriter replicas, ~17 s to start each, and the scorers) once, all together
(`session_actors`); every slow test reuses them."""

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


# One actor for every scorer, on a tenth of a CPU (the session's replicas hold most of the two).
ONE_SCORER_GROUP = "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.1}]"


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


def _scorer_actors(by_name: dict[str, list]) -> list:
    return list({id(a): a for rs in by_name.values() for a in rs}.values())


@pytest.fixture(scope="session")
def session_actors(request, ray_local, demo_models, demo_shards, tmp_path_factory):
    """The session's long-lived actors, each started once. All the selected tests will use are
    launched together, on the first request for any of them, so that their start-ups (mostly
    imports, one process each) overlap on the cores instead of queueing; each fixture below
    then waits for its own. Name -> (what the tests get, the refs that say it is ready)."""
    from pf1m.pipeline.driver import absolutize, start_rewriters, start_scorers

    def config(*extra: str) -> RunConfig:
        return absolutize(demo_config(demo_shards, demo_models, tmp_path_factory.mktemp("unused"),
                                      *extra))  # fmt: skip

    def rewriter():
        """One replica of the demo config's vLLM rewriter."""
        handles = start_rewriters(config(), "tests")
        return handles, [handles[0].info.remote()]

    def chat_rewriter():
        """One vLLM replica of the tiny chat model (tests/test_chat_pipeline.py)."""
        out = tmp_path_factory.mktemp("unused")
        handles = start_rewriters(absolutize(chat_demo_config(demo_shards, demo_models, out)),
                                  "tests-chat")  # fmt: skip
        return handles, [handles[0].info.remote()]

    def scorers():
        """One scorer actor holding the four tiny/real scorer models."""
        by_name = start_scorers(config(), "tests")
        return by_name, [a.names.remote() for a in _scorer_actors(by_name)]

    def deterministic_scorers():
        """Scorers for `rewriter.deterministic` runs (one item per forward pass), shared by
        every such run instead of each driver starting its own."""
        by_name = start_scorers(config("rewriter.deterministic=true", ONE_SCORER_GROUP),
                                "tests-deterministic")  # fmt: skip
        return by_name, [a.names.remote() for a in _scorer_actors(by_name)]

    starts = {f.__name__: f for f in (rewriter, chat_rewriter, scorers, deterministic_scorers)}
    items = request.session.items
    wanted = {name for item in items for name in getattr(item, "fixturenames", ())}
    launched: dict[str, tuple] = {}
    try:  # actors already launched are killed even if a later start fails
        for name, start in starts.items():
            if name in wanted:
                launched[name] = start()
        yield launched
    finally:
        for got, _ in launched.values():
            for actor in _scorer_actors(got) if isinstance(got, dict) else got:
                ray_local.kill(actor)


def _ready(session_actors: dict, ray_local, name: str):
    got, ready = session_actors[name]
    ray_local.get(ready)
    return got


@pytest.fixture(scope="session")
def rewriter(session_actors, ray_local) -> list:
    """One vLLM replica for the whole session, started from the demo config."""
    return _ready(session_actors, ray_local, "rewriter")


@pytest.fixture(scope="session")
def chat_rewriter(session_actors, ray_local) -> list:
    """One vLLM replica of the tiny chat model for the whole session (the only other engine)."""
    return _ready(session_actors, ray_local, "chat_rewriter")


@pytest.fixture(scope="session")
def scorers(session_actors, ray_local) -> dict[str, list]:
    """One scorer actor holding the four tiny/real scorer models, for the whole session."""
    return _ready(session_actors, ray_local, "scorers")


@pytest.fixture(scope="session")
def deterministic_scorers(session_actors, ray_local) -> dict[str, list]:
    """Scorers for deterministic runs, for the whole session."""
    return _ready(session_actors, ray_local, "deterministic_scorers")
