"""pf1m as an installed package, not a checkout: the wheel carries the presets (the `pf1m.configs`
package) and everything `pf1m run demo` needs.

The wheel is built from a copy of the packages pyproject.toml lists (no build isolation, no
network) and installed --no-deps into a fresh virtual environment that has no source tree; a
.pth file lends it .venv's site-packages for the dependencies (where pf1m itself is only an
editable finder that a .pth-added folder does not activate).

Its run is also the suite's one `pf1m run` of the demo preset as a user starts it (a subprocess
with the vLLM engine): the terminal shows pf1m's own lines, the engine's go to OUT/logs.
"""

import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pf1m.jobs.cli import demo_model_overrides
from tests.conftest import ROOT

SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def build_wheel(dest: Path) -> Path:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__")
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = ROOT / pattern.rstrip("*")
        if package.is_dir():
            shutil.copytree(package, src / package.name, ignore=skip)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*cmd, "-w", str(dest / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (dest / "dist").glob("pf1m-*.whl")
    return wheel


@pytest.mark.slow
@pytest.mark.drivers
def test_wheel_runs_the_demo_preset_outside_the_checkout(tmp_path, demo_models, demo_shards):
    wheel = build_wheel(tmp_path / "build")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python")]
    subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], check=True)
    deps = Path(sys.prefix) / SITE
    (env_dir / SITE / "pf1m-deps.pth").write_text(f"{deps}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=elsewhere, capture_output=True, text=True, timeout=timeout, check=False
        )

    where = run(
        str(env_dir / "bin" / "python"),
        "-c",
        "import pf1m.configs, pf1m.jobs.cli, pf1m.pipeline.driver; "
        "print(pf1m.jobs.cli.__file__, pf1m.pipeline.driver.__file__, pf1m.configs.__file__)",
    )
    assert where.returncode == 0, where.stderr
    for path in where.stdout.split():
        assert Path(path).is_relative_to(env_dir) and not Path(path).is_relative_to(ROOT)

    pf1m = str(env_dir / "bin" / "pf1m")
    helped = run(pf1m, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "resume" in helped.stdout

    out = tmp_path / "out"
    sets = [f"input={demo_shards}/*.tar", f"output={out}"]
    sets += demo_model_overrides(demo_models["rewriter"].parent)
    args = [a for s in sets for a in ("--set", s)]
    ran = run(pf1m, "run", "demo", "--limit", "5", "--max-shards", "2", *args, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "== pf1m run summary ==" in ran.stdout
    # A quiet terminal (what `pf1m demo` runs, less its two demo lines): pf1m's own lines;
    # Ray worker and vLLM engine output is in OUT/logs, which the summary names
    printed = (ran.stdout + ran.stderr).splitlines()
    assert len(printed) <= 40 and not [x for x in printed if "pid=" in x], "\n".join(printed)
    assert f"logs           {out}/logs" in ran.stdout
    engine = "".join(p.read_text() for p in (out / "logs").glob("worker-*.log"))
    assert "Initializing a V1 LLM engine" in engine
    assert "samples in     10" in ran.stdout and "2/2 committed" in ran.stdout
    assert {p.stem for p in (out / "_commits").glob("*.json")} == {"00000", "00001"}
    counted = sum(pq.read_metadata(p).num_rows for p in out.glob("*/0000[01].parquet"))
    assert counted == 10
