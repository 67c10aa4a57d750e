"""pf1m as an installed package, not a checkout: the wheel carries the presets (the `pf1m.configs`
package) and everything `pf1m run demo` needs.

The wheel is built from a copy of the packages pyproject.toml lists (no build isolation, no
network) and installed --no-deps into a fresh virtual environment that has no source tree; a
.pth file lends it .venv's site-packages for the dependencies (where pf1m itself is only an
editable finder that a .pth-added folder does not activate). About 90 s on two loaded cores,
most of it Ray and the tiny models starting in the subprocess.
"""

import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

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
    sets = [f"input={demo_shards}/*.tar", f"output={out}", "writer.embed_images=false"]
    sets += demo_model_overrides(demo_models["rewriter"].parent)
    sets.append("rewriter.backend=transformers")  # the same code path, no engine start-up
    args = [a for s in sets for a in ("--set", s)]
    ran = run(pf1m, "run", "demo", "--limit", "2", "--max-shards", "1", *args, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "== pf1m run summary ==" in ran.stdout
    assert "shards         1/1 committed" in ran.stdout and "samples in     2" in ran.stdout
    assert (out / "_commits" / "00000.json").is_file()
