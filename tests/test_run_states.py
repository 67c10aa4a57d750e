"""How a run ends is what run.json says: SIGTERM -> `interrupted` (exit 130) with the shards
committed so far, an exception in the driver -> `failed` with the error (exit 1); in both the
lock is released and no process of the run is left (its whole session is checked, since Ray
gives each worker its own process group). `pf1m status OUT` reads it back without Ray.

The fast tests build run directories by hand. The two slow ones are real `pf1m run`
subprocesses, each in its own session: SIGTERM sent once a shard committed while the
`pause` fault point holds another shard (so the run cannot finish first), and the `raise`
fault point after the first recorded shard. Both run the transformers backend (~20 s each; a
vLLM engine would add ~17 s and nothing here is about the engine: tests/test_wheel.py runs the
demo end to end on vLLM).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pf1m.jobs.cli import demo_model_overrides, main
from pf1m.pipeline.lock import LOCK
from pf1m.pipeline.status import is_run_target
from pf1m.pipeline.summary import format_summary
from pf1m.schemas.commit import CommitMarker, InputFingerprint
from pf1m.schemas.run import ExitCode, RunLock, RunManifest, ShardState
from tests.conftest import DEMO_CONFIG, ROOT

BOUND_S = 600  # bounds for polls and waits, never expectations


def write_run(out: Path, status: str, shards: dict[str, str], error: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest = RunManifest(
        run_id="r1", status=status, error=error, config={}, config_hash="h1", hashed={},
        versions={}, started_at="t0", updated_at="t1",
        shards={s: ShardState(status=st, url=f"file:///in/{s}.tar",
                              error="boom" if st == "failed" else None)
                for s, st in shards.items()},
    )  # fmt: skip
    (out / "run.json").write_text(manifest.model_dump_json())


def write_marker(out: Path, shard: str, config_hash: str = "h1") -> None:
    marker = CommitMarker(
        shard=shard, run_id="r1", input=InputFingerprint(url=f"file:///in/{shard}.tar", size=1),
        config_hash=config_hash, samples_in=3, files={}, committed_at="t1",
    )  # fmt: skip
    (out / "_commits").mkdir(exist_ok=True)
    (out / "_commits" / f"{shard}.json").write_text(marker.model_dump_json())


def status_of(target: str, capsys, *extra: str) -> tuple[int, str]:
    code = main(["status", target, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_status_of_an_interrupted_run_directory(tmp_path, capsys):
    out = tmp_path / "out"
    write_run(out, "interrupted", {"a": "done", "b": "pending", "c": "pending", "d": "failed"},
              error="SIGTERM")  # fmt: skip
    write_marker(out, "b")  # committed after the driver's last record: counted done
    write_marker(out, "c", config_hash="other")  # another config's commit: still pending
    code, text = status_of(str(out), capsys)
    assert code == 0
    assert f"run r1 in {out}: interrupted" in text and "error: SIGTERM" in text
    assert "shards: 2 done, 1 failed, 1 pending (4 in all)" in text
    assert "failed d: boom" in text and f"continue: pf1m resume {out}" in text


def test_status_of_a_running_run_whose_driver_is_gone(tmp_path, capsys):
    out = tmp_path / "out"
    write_run(out, "running", {"a": "pending"})
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = RunLock(host=socket.gethostname(), pid=gone.pid, run_id="r1", started_at="t0",
                   heartbeat_at=time.time(), ttl_s=120)  # fmt: skip
    (out / LOCK).write_text(lock.model_dump_json())
    code, text = status_of(str(out), capsys)
    assert "running, but no live driver holds it" in text and "continue: pf1m resume" in text


def test_status_refuses_address_for_a_run_directory_and_a_directory_without_a_run(tmp_path, capsys):
    out = tmp_path / "out"
    write_run(out, "succeeded", {"a": "done"})
    code, text = status_of(str(out), capsys, "--address", "http://head:8265")
    assert code == ExitCode.BAD_CONFIG and "--address is for Ray job ids" in text
    code, text = status_of(str(out), capsys)
    assert code == 0 and f"complete; verify and report: pf1m audit {out}" in text
    code, text = status_of(str(tmp_path), capsys)
    assert code == ExitCode.BAD_CONFIG and "no run.json here" in text
    assert not is_run_target("pf1m-0123456789") and not is_run_target("raysubmit_AbC")
    assert is_run_target("s3://bucket/run") and is_run_target(str(out))


def test_job_commands_against_an_unreachable_cluster_say_so_in_one_error(capsys):
    """status, logs, stop and submit with an address where no Ray listens: exit 1 and pf1m's
    own lines naming the address, not the Job API's traceback."""
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
    for args in (["status", "pf1m-0123456789"], ["logs", "pf1m-0123456789"],
                 ["stop", "pf1m-0123456789"], ["submit", "demo"]):  # fmt: skip
        code = main([*args, "--address", address])
        captured = capsys.readouterr()
        assert code == ExitCode.ERROR, args
        assert captured.err.startswith(f"error: Ray Job API at {address}: Failed to connect")
        assert "Traceback" not in captured.err and len(captured.err.splitlines()) == 2


def test_the_summary_of_an_interrupted_run_says_how_to_go_on():
    summary = {
        "shards_done": 1, "shards_total": 4, "shards_processed_now": 1, "samples_in": 21,
        "kept": 9, "rejected": 12, "reasons": {}, "quarantined": 0, "quarantine_stages": {},
        "samples_per_s": 2.0, "wall_s": 10.5, "startup_s": 30.0, "shards_failed": {},
        "output": "/o", "logs": "/o/logs", "state": "interrupted", "error": "SIGTERM",
    }  # fmt: skip
    text = format_summary(summary, int(ExitCode.INTERRUPTED))
    assert "state          interrupted (SIGTERM); shards pending: 3" in text
    assert "continue       pf1m resume /o" in text and "logs           /o/logs" in text
    assert text.endswith("exit code      130")


# -- real runs ------------------------------------------------------------------------------


def pf1m_run(shards: Path, models: dict, out: Path, *args: str, env: dict) -> subprocess.Popen:
    """`pf1m run` in a session of its own, as a user's terminal would start it."""
    sets = [
        f"input={shards}/*.tar",
        f"output={out}",
        "limit_per_shard=5",  # how a run ends is the point, not how much it does
        *demo_model_overrides(models["rewriter"].parent),
    ]
    cmd = [sys.executable, "-m", "pf1m.jobs.cli", "run", str(DEMO_CONFIG), *args]
    cmd += [a for s in sets for a in ("--set", s)]
    base = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen(
        cmd, cwd=ROOT, env={**base, **env}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def in_session(sid: int, describe) -> dict[str, object]:
    """`describe(proc)` for each live process of the session, by "PID NAME" (zombies hold
    nothing: pid 1 here may not reap them); None from `describe` leaves a process out."""
    found = {}
    for proc in psutil.process_iter(["pid", "name", "status", "cmdline"]):
        try:
            if os.getsid(proc.pid) != sid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            value = describe(proc)
            if value is not None:
                found[f"{proc.pid} {(proc.info['cmdline'] or [proc.info['name']])[0]}"] = value
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def ray_workers_nice(sid: int) -> dict[str, object]:
    """Each Ray worker process of the session (`ray::...`, less Ray's own agents): its niceness."""

    def worker_nice(proc) -> int | None:
        title = (proc.info["cmdline"] or [""])[0]
        is_worker = title.startswith("ray::") and not title.endswith("Agent")  # Dashboard-,
        return proc.nice() if is_worker else None  # RuntimeEnvAgent are Ray's own

    return in_session(sid, worker_nice)


def left_in_session(sid: int) -> list[str]:
    """Live processes of the session."""
    return list(in_session(sid, lambda proc: True))


def assert_nothing_left(sid: int) -> None:
    deadline = time.monotonic() + BOUND_S  # processes take a moment to exit after the driver
    while (left := left_in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the run left behind: {left}"


def ended(proc: subprocess.Popen) -> str:
    try:
        log, _ = proc.communicate(timeout=BOUND_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return log


def recorded(out: Path) -> tuple[RunManifest, set[str], set[str]]:
    """run.json, its done shards, and the shards whose commit marker exists."""
    run = RunManifest.model_validate_json((out / "run.json").read_text())
    done = {s for s, st in run.shards.items() if st.status == "done"}
    return run, done, {p.stem for p in (out / "_commits").glob("*.json")}


@pytest.mark.slow
def test_sigterm_ends_the_run_interrupted_and_stops_everything(
    demo_models, demo_shards, tmp_path, capsys
):
    out = tmp_path / "out"
    proc = pf1m_run(
        demo_shards, demo_models, out, "--verbose", "--set", "rewriter.backend=transformers",
        "--set", "resources.worker_niceness=3",
        env={"PF1M_FAULT_PAUSE": "before_commit:00003"},
    )  # fmt: skip
    deadline = time.monotonic() + BOUND_S
    while not list((out / "_commits").glob("*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    # the local Ray's workers (rewriter, scorers, shard tasks) at the niceness the config
    # gives them, above the driver's own (Ray's default would have added 15)
    niceness = ray_workers_nice(proc.pid)
    assert len(niceness) >= 3 and set(niceness.values()) == {os.nice(0) + 3}, niceness
    proc.send_signal(signal.SIGTERM)  # to the driver only: it must stop the rest itself
    log = ended(proc)
    assert proc.returncode == ExitCode.INTERRUPTED, log
    run, done, committed = recorded(out)
    assert run.status == "interrupted" and run.error == "SIGTERM"
    assert done == committed and "00003" not in done and run.shards["00003"].status == "pending"
    assert not (out / LOCK).exists()
    assert_nothing_left(proc.pid)
    assert "state          interrupted (SIGTERM)" in log and f"pf1m resume {out}" in log
    # --verbose: the replica's own lines (transformers' weight loading), live
    assert "(TransformersRewriter pid=" in log
    code, text = status_of(str(out), capsys)
    assert f"interrupted\nerror: SIGTERM\nshards: {len(done)} done, 0 failed, " in text


@pytest.mark.slow
def test_an_exception_in_the_driver_ends_the_run_failed(demo_models, demo_shards, tmp_path):
    out = tmp_path / "out"
    proc = pf1m_run(
        demo_shards, demo_models, out, "--set", "rewriter.backend=transformers",
        env={"PF1M_FAULT_RAISE": "recorded:1"},
    )  # fmt: skip
    log = ended(proc)
    assert proc.returncode == ExitCode.ERROR, log
    run, done, committed = recorded(out)
    assert run.status == "failed" and run.error.startswith("InjectedFault: fault point")
    assert done == committed and len(done) >= 1
    assert not (out / LOCK).exists()
    assert_nothing_left(proc.pid)
    # quiet mode: the cause on the terminal, the traceback in OUT/logs, no worker lines
    assert "error: the run broke: InjectedFault" in log and "pid=" not in log
    assert "Traceback" not in log and "Traceback" in (out / "logs" / "driver.log").read_text()
    assert "state          failed (InjectedFault" in log
