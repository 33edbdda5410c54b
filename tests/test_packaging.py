"""The install puts one name, ``stae_deploy``, into site-packages, and no module of this repository
can shadow a standard-library module or another installed distribution's package (which happens
when a folder lands on sys.path, as it does for ``python export/to_onnx.py``).
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT_FOLDERS = ("runtime", "stae_ref", "export", "verify", "calibration", "serving",
                   "benchmarks", "stae_deploy", "tests")


def project_module_names() -> list[tuple[Path, str]]:
    """(file or package folder, the name it would import as) for every .py file and every folder
    with an ``__init__.py`` under the project folders."""
    named = []
    for folder in PROJECT_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            if path.name == "__init__.py":
                named.append((path.parent, path.parent.name))
            elif path.stem != "conftest":
                named.append((path, path.stem))
    return named


def other_distributions_packages() -> dict[str, list[str]]:
    """Top-level import name -> distributions providing it, this project's own excluded."""
    own = PYPROJECT["project"]["name"]
    return {name: dists for name, dists in importlib.metadata.packages_distributions().items()
            if set(dists) != {own}}


def test_no_module_shadows_the_stdlib_or_an_installed_package():
    stdlib, installed = sys.stdlib_module_names, other_distributions_packages()
    shadowing = []
    for path, name in project_module_names():
        where = path.relative_to(ROOT)
        if name in stdlib:
            shadowing.append(f"{where} shadows the standard-library module '{name}'")
        if name in installed:
            shadowing.append(f"{where} shadows '{name}' of {', '.join(sorted(set(installed[name])))}")
    assert not shadowing, "\n".join(shadowing)


def test_the_shadowing_check_knows_the_names_it_guards():
    """The check itself: it sees the stdlib, the installed packages, and this project's files."""
    assert {"profile", "cmd", "code"} <= sys.stdlib_module_names
    assert {"numpy", "onnxruntime", "torch"} <= set(other_distributions_packages())
    names = {name for _, name in project_module_names()}
    assert {"runtime", "to_onnx", "main", "commands"} <= names


def test_every_package_folder_is_installed():
    """Each folder with an __init__.py is listed in [tool.setuptools] packages, under the name
    [tool.setuptools.package-dir] maps its folder to; nothing listed is missing."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    folder_to_package = {folder: package for package, folder in setuptools["package-dir"].items()}
    expected = set()
    for init in ROOT.glob("*/**/__init__.py"):
        folder = init.parent.relative_to(ROOT)
        top = folder.parts[0]
        if top not in PROJECT_FOLDERS or top == "tests":
            continue
        base = max((f for f in folder_to_package if folder.parts[:len(Path(f).parts)]
                    == Path(f).parts), key=lambda f: len(Path(f).parts))
        rest = folder.parts[len(Path(base).parts):]
        expected.add(".".join([folder_to_package[base], *rest]))
    listed = set(setuptools["packages"])
    assert not expected - listed, f"folders with __init__.py not installed: {expected - listed}"
    package_to_folder = setuptools["package-dir"]
    missing = set()
    for package in listed:      # a data-only package (no __init__.py) still needs its folder
        base = max((p for p in package_to_folder if package == p or package.startswith(p + ".")),
                   key=len)
        folder = ROOT / package_to_folder[base] / Path(*package[len(base):].split(".")[1:])
        if not folder.is_dir():
            missing.add(package)
    assert not missing, f"listed packages without a folder: {missing}"


@pytest.mark.integration   # ~25 s: builds a wheel and a venv
def test_a_real_install_puts_only_stae_deploy_into_site_packages(tmp_path):
    """Build the wheel with this venv's setuptools (no isolation, no downloads), install it
    (not editable, no dependencies) into a fresh venv that sees the system's packages, and run
    ``stae --help`` from outside the repository."""
    started = time.perf_counter()
    source = tmp_path / "source"     # a copy: an in-tree build would write build/ into the repo
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in (f for f in PROJECT_FOLDERS if f != "tests"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                   check=True, cwd=tmp_path)
    wheel, = wheels.glob("stae_deploy-*.whl")
    target = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(target)
    site_packages, = target.glob("lib/python*/site-packages")
    before = set(os.listdir(site_packages))     # what venv itself put there (pip, ...)
    subprocess.run([target / "bin/python", "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-index", str(wheel)], check=True, cwd=tmp_path)
    after = sorted(os.listdir(site_packages))
    print(f"{site_packages}: {after} (installed in {time.perf_counter() - started:.1f} s)")
    added = set(after) - before
    assert {name for name in added if name != "__pycache__"} == {
        "stae_deploy", wheel.name.split("-py")[0] + ".dist-info"}, added
    installed = sorted(p.name for p in (site_packages / "stae_deploy").iterdir()
                       if p.name != "__pycache__")
    assert installed == ["__init__.py", "benchmarks", "calibration", "cli", "export", "runtime",
                         "serving", "stae_ref", "verify"]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = subprocess.run([target / "bin/stae", "--help"], cwd=outside, capture_output=True,
                            text=True, env={k: v for k, v in os.environ.items()
                                            if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: stae")
