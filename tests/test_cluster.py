"""Cluster operation against a real two-node Ray cluster started by the test: `ray start
--head` and a second raylet joined with `ray start --address`, both on loopback with their
own ports, object stores and logical GPUs, token authentication on (Ray 2.60's default for
`ray start` clusters), each node with its own temp dir. The demo config runs on the
transformers backend (an engine per replica would exhaust two cores) with one rewriter replica
per GPU node."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from pf1m.jobs.cli import demo_model_overrides
from tests.conftest import DEMO_CONFIG, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.drivers]

RAY = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def node_args(ports: list[int], worker_range: tuple[int, int]) -> list[str]:
    names = ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port")  # fmt: skip
    args = [a for name, port in zip(names, ports, strict=True) for a in (name, str(port))]
    return [*args, "--min-worker-port", str(worker_range[0]), "--max-worker-port",
            str(worker_range[1])]  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Each node its own temp dir, as on separate machines: with one shared, both runtime-env
    # agents unpack a job's working_dir into the same folder at once, and a worker may import
    # from a half-unpacked copy (ModuleNotFoundError for a module that exists).
    temp, worker_temp = tmp_path_factory.mktemp("ray"), tmp_path_factory.mktemp("ray-worker")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # the cluster's token, known to the polls
    env["RAY_worker_niceness"] = "0"  # as the README says for nodes that run other work too
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # as with an activated venv
    gcs, dashboard, *ports = free_ports(14)
    head_metrics, worker_metrics = ports[2], ports[8]
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--num-gpus", "2",
              "--object-store-memory", str(200 * 2**20), "--disable-usage-stats"]  # fmt: skip
    head = [RAY, "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard), "--include-dashboard", "true",
            "--temp-dir", str(temp), *common, *node_args(ports[:6], (21000, 21999))]  # fmt: skip
    worker = [RAY, "start", "--address", f"127.0.0.1:{gcs}", "--temp-dir", str(worker_temp),
              *common, *node_args(ports[6:12], (22000, 22999))]  # fmt: skip
    try:
        for cmd in (head, worker):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        yield {
            "address": f"http://127.0.0.1:{dashboard}",
            "env": env,
            "metrics": [head_metrics, worker_metrics],
        }
    finally:  # `ray stop` would also stop the test session's own local Ray: kill ours only
        marks = (str(temp), str(worker_temp), f"127.0.0.1:{gcs}")  # teardown kills ours
        ours = [p for p in psutil.process_iter(["cmdline"])
                if any(m in a for a in p.info["cmdline"] or [] for m in marks)]  # fmt: skip
        family = set(ours)  # agents rename themselves (ray::DashboardAgent): go by parentage
        for proc in ours:
            try:
                family.update(proc.children(recursive=True))
            except psutil.NoSuchProcess:
                pass
        for proc in family:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def cluster_shards(tmp_path_factory) -> Path:
    from pf1m.demo.data import write_shards

    out = tmp_path_factory.mktemp("cluster-shards")
    write_shards(out, samples=48, shards=6, seed=0)
    return out


def sets(shards: Path, models: dict, out: Path, *extra: str) -> list[str]:
    items = [
        f"input={shards}/*.tar", f"output={out}", "rewriter.backend=transformers",
        "resources.rewriter_replicas=2", "resources.gpus_per_replica=1",
        "resources.cpus_per_replica=0.5", "resources.shards_in_flight=2",
        "scoring.groups=[{scorers: [sts, nli, clip_paragraph, reward], num_cpus: 0.5}]",
        *demo_model_overrides(models["rewriter"].parent), *extra,
    ]  # fmt: skip
    return [a for s in items for a in ("--set", s)]


def pf1m(cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pf1m.jobs.cli", *args], cwd=ROOT, env=cluster["env"],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def job_state(cluster, job: str) -> str:
    """Ray's Jobs REST API, from this process: a `pf1m status` subprocess per poll cost ~0.75 s
    of CPU that the job it waited for needed."""
    request = urllib.request.Request(
        f"{cluster['address']}/api/jobs/{job}",
        headers={"authorization": f"Bearer {cluster['env']['RAY_AUTH_TOKEN']}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["status"]


def wait_for(cluster, job: str, states: set[str], timeout: float = 400) -> str:
    """Polls until the job is in one of `states`; then `pf1m status` must say the same."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = job_state(cluster, job)
        except OSError:  # the dashboard did not answer this time (urllib's errors are OSErrors)
            state = ""
        if state in states:
            out = pf1m(cluster, "status", job, "--address", cluster["address"]).stdout
            assert out.startswith(f"{job}: {state}"), out
            return state
        time.sleep(0.5)
    raise AssertionError(f"{job} never reached {states}")


def rows(out: Path) -> list[str]:
    return [
        uid
        for kind in ("data", "rejected", "quarantine")
        for p in sorted((out / kind).glob("*.parquet"))
        for uid in pq.read_table(p, columns=["uid"]).column("uid").to_pylist()
    ]


def plain_ray_job_submit(cluster, demo_models, cluster_shards, out: Path) -> str:
    """The same run through Ray's own CLI: `ray job submit --working-dir` + the rewrite job."""
    cmd = [RAY, "job", "submit", "--address", cluster["address"], "--working-dir", str(ROOT),
           "--no-wait", "--", "python", "-m", "pf1m.jobs.rewrite",
           "--config", "pf1m/configs/demo.yaml",
           *sets(cluster_shards, demo_models, out)]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=cluster["env"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return next(w.strip("'") for w in done.stdout.split() if w.strip("'").startswith("raysubmit_"))


def test_submit_stop_then_plain_ray_job_submit_resumes_spread_reported_and_complete(
    cluster, demo_models, cluster_shards, tmp_path
):
    """`pf1m submit`, `pf1m stop` once a shard is committed (the `pause` fault point holds the
    last shard, so the run cannot finish first), then the same run resubmitted with plain `ray
    job submit` (a user need not use pf1m's wrapper): it resumes to every row once, with one
    rewriter replica per node, its report in `pf1m logs` and its metrics on the nodes'
    Prometheus endpoints."""
    out = tmp_path / "out"
    held = "job.runtime_env={env_vars: {PF1M_FAULT_PAUSE: 'before_commit:00005'}}"
    done = pf1m(cluster, "submit", str(DEMO_CONFIG), "--address", cluster["address"],
                *sets(cluster_shards, demo_models, out, held))  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = done.stdout.split()[1]
    assert f"pf1m logs {job}" in done.stdout
    deadline = time.monotonic() + 300
    while not list((out / "_commits").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pf1m(cluster, "stop", job, "--address", cluster["address"]).returncode == 0
    assert wait_for(cluster, job, {"STOPPED", "SUCCEEDED", "FAILED"}) == "STOPPED"
    assert not (out / "_commits" / "00005.json").exists()

    again = plain_ray_job_submit(cluster, demo_models, cluster_shards, out)
    state = wait_for(cluster, again, {"SUCCEEDED", "FAILED", "STOPPED"})
    text = pf1m(cluster, "logs", again, "--address", cluster["address"]).stdout
    assert state == "SUCCEEDED", text
    assert "rewriter replica 0: node" in text and "== pf1m run summary ==" in text
    assert "is a local path on a 2-node cluster" in text  # said, not refused: it may be NFS
    run = json.loads((out / "run.json").read_text())
    placed = {(r["node_id"], tuple(r["gpu_ids"])) for r in run["replicas"]}
    assert len(placed) == 2 and len({node for node, _ in placed}) == 2  # one per node
    assert all(len(gpus) == 1 for _, gpus in placed)
    uids = rows(out)
    assert len(uids) == 48 and len(set(uids)) == 48
    # metrics reached the nodes' Prometheus endpoints (exported every few seconds)
    deadline, text = time.monotonic() + 60, ""
    while 'outcome="kept"' not in text and time.monotonic() < deadline:
        text = "".join(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            for port in cluster["metrics"]
        )
        time.sleep(1)
    assert "pf1m_samples" in text and 'outcome="kept"' in text


def test_asking_for_more_gpus_than_exist_fails_fast(cluster, demo_models, cluster_shards, tmp_path):
    out = tmp_path / "out"
    args = ["submit", str(DEMO_CONFIG), "--address", cluster["address"],
            *sets(cluster_shards, demo_models, out, "resources.rewriter_replicas=5")]  # fmt: skip
    job = pf1m(cluster, *args).stdout.split()[1]
    assert wait_for(cluster, job, {"SUCCEEDED", "FAILED", "STOPPED"}) == "FAILED"
    logs = pf1m(cluster, "logs", job, "--address", cluster["address"]).stdout
    assert "the config asks for 5 GPUs" in logs and "the cluster has 4" in logs


def test_an_unknown_job_id_is_one_clear_error(cluster):
    done = pf1m(cluster, "status", "pf1m-nosuchjob", "--address", cluster["address"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: Ray Job API at {cluster['address']}:")
    assert "pf1m-nosuchjob" in done.stderr and "Traceback" not in done.stderr
