"""The resource check that runs before any actor starts (pure: no Ray)."""

import pytest

from pf1m.pipeline.resources import Node, alive_nodes, check
from pf1m.schemas.config import load_config
from tests.conftest import DEMO_CONFIG, PAPER_CONFIG


def test_paper_preset_fits_eight_gpus_on_one_or_two_nodes():
    cfg = load_config(PAPER_CONFIG)  # 8 replicas x 1 GPU + 4 scorer actors x 0.25 GPU
    assert check(cfg, [Node("a", 96, 8), Node("b", 96, 8)]) == []
    problems = check(cfg, [Node("a", 96, 8)])
    assert problems and "asks for 9 GPUs" in problems[0] and "has 8" in problems[0]


def test_more_gpus_per_replica_than_any_node_has():
    cfg = load_config(
        PAPER_CONFIG, ["resources.gpus_per_replica=4", "resources.rewriter_replicas=1"]
    )
    problems = check(cfg, [Node("a", 32, 2), Node("b", 32, 2)])
    assert any("gpus_per_replica=4 must fit on one node" in p for p in problems)


def test_actors_that_leave_no_cpu_for_shard_tasks():
    cfg = load_config(DEMO_CONFIG, ["resources.cpus_per_replica=1.5"])  # + scorers 0.5 = 2
    problems = check(cfg, [Node("laptop", 2, 0)])
    assert problems == [
        "no CPU left for shard tasks (resources.shard_task_cpus=0.1) once the actors hold "
        "theirs: lower resources.cpus_per_replica or scoring.groups[].num_cpus, or add nodes"
    ]
    assert check(load_config(DEMO_CONFIG), [Node("laptop", 2, 0)]) == []


def test_started_actors_are_not_counted_again():
    cfg = load_config(PAPER_CONFIG)
    assert check(cfg, [Node("a", 8, 1)], rewriters=False, scorers=False) == []


def test_alive_nodes_reads_ray_nodes():
    nodes = alive_nodes([
        {"Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8.0, "GPU": 2.0}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0}},
        {"Alive": True, "NodeManagerAddress": "10.0.0.3", "Resources": {"CPU": 4.0}},
    ])  # fmt: skip
    assert nodes == [Node("10.0.0.1", 8.0, 2.0), Node("10.0.0.3", 4.0, 0.0)]


@pytest.mark.slow
def test_a_run_asking_for_absent_gpus_fails_before_any_actor(
    ray_local, demo_models, demo_shards, tmp_path, capsys
):
    from pf1m.pipeline.driver import Driver
    from pf1m.schemas.run import ExitCode
    from tests.conftest import demo_config

    cfg = demo_config(demo_shards, demo_models, tmp_path / "out", "resources.gpus_per_replica=1")
    result = Driver(cfg).run()
    assert result.exit_code == ExitCode.BAD_CONFIG
    assert "the config asks for 1 GPUs" in capsys.readouterr().err
    names = [a["name"] for a in ray_local.util.list_named_actors(all_namespaces=True)]
    assert not any(n.startswith("pf1m-rewriter-") and "tests" not in n for n in names)  # none

    assert not (tmp_path / "out" / "run.json").exists()


def test_a_replica_with_several_gpus_shards_the_model_over_them():
    from pf1m.actors.vllm_rewriter import vllm_engine_kwargs

    cfg = load_config(DEMO_CONFIG).rewriter
    assert "tensor_parallel_size" not in vllm_engine_kwargs(cfg, 0, gpus=1)
    assert vllm_engine_kwargs(cfg, 0, gpus=2)["tensor_parallel_size"] == 2


def test_the_cpu_build_runs_the_model_in_the_engine_process_unless_told_otherwise():
    from pf1m.actors.vllm_rewriter import UNIPROC_EXECUTOR, vllm_engine_kwargs

    cfg = load_config(DEMO_CONFIG).rewriter
    executor = "distributed_executor_backend"
    assert vllm_engine_kwargs(cfg, 0, on_cpu=True)[executor] == UNIPROC_EXECUTOR
    assert executor not in vllm_engine_kwargs(cfg, 0, on_cpu=False)  # GPU: vLLM's own choice
    assert vllm_engine_kwargs(cfg, 0, gpus=2, on_cpu=True)[executor] == "mp"
    mp = load_config(DEMO_CONFIG, ["rewriter.engine.cpu_executor=mp"]).rewriter
    assert executor not in vllm_engine_kwargs(mp, 0, on_cpu=True)
    tp = load_config(DEMO_CONFIG, ["rewriter.engine.extra_args={tensor_parallel_size: 2}"])
    assert executor not in vllm_engine_kwargs(tp.rewriter, 0, on_cpu=True)  # vLLM picks mp
    mine = load_config(
        DEMO_CONFIG, ["rewriter.engine.extra_args={distributed_executor_backend: mp}"]
    )
    assert vllm_engine_kwargs(mine.rewriter, 0, on_cpu=True)[executor] == "mp"  # the user's wins
