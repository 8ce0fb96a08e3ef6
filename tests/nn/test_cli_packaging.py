"""What a pip user gets: the version, the metadata that installs without deprecation warnings,
and `bptt bench` saying plainly that the benchmarks live in the source tree."""
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import autograd_core

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_is_set_and_is_the_installed_one():
    assert autograd_core.__version__ == "0.1.0"
    assert importlib.metadata.version("autograd-core") == autograd_core.__version__
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "autograd_core.__version__"}


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    # a TOML table ({text = "MIT"}) is deprecated since setuptools 77, which reads the string
    assert PYPROJECT["project"]["license"] == "MIT"
    assert PYPROJECT["build-system"]["requires"] == ["setuptools>=77"]


def test_extras_are_the_ones_the_readme_documents():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) == {"dev", "plots", "torch"}
    readme = (ROOT / "README.md").read_text()
    for extra in ("plots", "torch"):
        assert f'pip install ".[{extra}]"' in readme


def test_bench_from_an_installed_package_says_it_needs_the_source_tree(tmp_path):
    # the packages as pip installs them: no pyproject.toml and no benchmarks/ beside them
    site = tmp_path / "site-packages"
    for package in ("autograd_core", "nn"):
        shutil.copytree(ROOT / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (site / "benchmarks").mkdir()  # some other distribution's `benchmarks` is not ours
    (site / "benchmarks" / "__main__.py").write_text("raise SystemExit('not ours')\n")
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-m", "nn", "bench", "--quick"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == ("bptt bench: the benchmarks are in the source tree, not in the "
                           "installed package; clone the repository and run ./dev.sh bench "
                           "there\n")


def test_bench_from_the_source_tree_runs(capsys):
    from nn.cli import bench
    assert bench.source_tree() == ROOT
