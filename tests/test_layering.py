"""The layers of ``stae_deploy`` (README "Architecture"): every import points down the order
runtime < stae_ref < export < verify < calibration < serving < benchmarks < cli, and command-line
parsing (``argparse``) lives only in the ``stae`` command and in benchmark scripts.

Read from the source with ``ast`` (nothing is imported), over every module pyproject.toml installs.
"""
from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and any layer before it.
LAYERS = ("runtime", "stae_ref", "export", "verify", "calibration", "serving", "benchmarks", "cli")


@dataclass(frozen=True)
class Module:
    """One source file of the installed package: its dotted name, path and parsed tree."""

    name: str
    path: Path
    tree: ast.Module

    @property
    def layer(self) -> str | None:
        """The layer this module belongs to (``stae_deploy.<layer>...``); None for the root
        ``stae_deploy/__init__.py``."""
        return layer_of(self.name)

    @property
    def package(self) -> str:
        """The package relative imports resolve against."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def layer_of(module_name: str) -> str | None:
    """``stae_deploy.export.to_onnx`` -> ``export``; None for a name outside the layers."""
    parts = module_name.split(".")
    if len(parts) < 2 or parts[0] != "stae_deploy" or parts[1] not in LAYERS:
        return None
    return parts[1]


def project_modules() -> list[Module]:
    """Every .py file under a folder that pyproject.toml's [tool.setuptools.package-dir] maps,
    with the dotted name it is installed under."""
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    modules = []
    for package, folder in package_dir.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            relative = path.relative_to(base).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            # stae_deploy/ also holds cli/; runtime/ and the others are mapped on their own.
            if package == "stae_deploy" and parts and f"stae_deploy.{parts[0]}" in package_dir:
                continue
            modules.append(Module(name, path, ast.parse(path.read_text(), str(path))))
    return modules


def imported_modules(module: Module) -> set[str]:
    """Dotted names of every ``stae_deploy`` module ``module`` imports anywhere (top level or
    inside functions): import statements, relative imports, and ``import_module("...")``.
    A script's ``if __name__ == "__main__":`` block runs only when the file is run as a script,
    never on import, so what it imports (``python export/to_onnx.py`` hands over to the ``stae``
    command) is no dependency of the module and is left out."""
    found: set[str] = set()
    for node in (n for top in module.tree.body if not is_main_block(top) for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            found.add(source)
            # `from stae_deploy import runtime`: the name is a module too
            found.update(f"{source}.{alias.name}" for alias in node.names
                         if f"{source}.{alias.name}" in MODULE_NAMES)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
            found.add(node.args[0].value)
    return {name for name in found if name.split(".")[0] == "stae_deploy"}


def is_main_block(node: ast.stmt) -> bool:
    """True for a top-level ``if __name__ == "__main__":`` statement."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__"
                    for c in node.test.comparators))


def has_main_block(module: Module) -> bool:
    """True if the module ends in a top-level ``if __name__ == "__main__":`` (a script)."""
    return any(is_main_block(node) for node in module.tree.body)


def imports_argparse(module: Module) -> bool:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse" and not node.level:
            return True
    return False


MODULES = project_modules()
MODULE_NAMES = {m.name for m in MODULES}


def test_the_scan_sees_every_layer():
    """The scan itself: each layer has modules, and a known downward import is found."""
    layers = {m.layer for m in MODULES}
    assert set(LAYERS) <= layers, f"layers without modules: {set(LAYERS) - layers}"
    main = next(m for m in MODULES if m.name == "stae_deploy.cli.main")
    assert "stae_deploy.runtime.errors" in imported_modules(main)


def upward_imports(module: Module) -> list[str]:
    """``module -> imported module`` for each import of a layer above ``module``'s own."""
    if module.layer is None:
        return []
    rank = LAYERS.index(module.layer)
    return [f"{module.name} -> {imported}" for imported in sorted(imported_modules(module))
            if (layer := layer_of(imported)) is not None and LAYERS.index(layer) > rank]


def test_a_planted_upward_import_is_found():
    """Lazy, relative and ``import_module`` imports all count; imports down or sideways do not."""
    source = ("from . import base\n"
              "from ..errors import ConfigError\n"
              "def parse():\n"
              "    from stae_deploy.cli.args import frame_size\n"
              "    importlib.import_module('stae_deploy.export.to_onnx')\n"
              "if __name__ == '__main__':\n"            # a script's entry point: not counted
              "    from stae_deploy.cli.main import main\n")
    planted = Module("stae_deploy.runtime.backends.planted", ROOT / "runtime/backends/planted.py",
                     ast.parse(source))
    assert imported_modules(planted) == {
        "stae_deploy.runtime.backends", "stae_deploy.runtime.backends.base",
        "stae_deploy.runtime.errors", "stae_deploy.cli.args", "stae_deploy.export.to_onnx"}
    assert upward_imports(planted) == [
        "stae_deploy.runtime.backends.planted -> stae_deploy.cli.args",
        "stae_deploy.runtime.backends.planted -> stae_deploy.export.to_onnx"]


def test_every_import_points_down_the_layers():
    offending = [pair for module in MODULES for pair in upward_imports(module)]
    assert not offending, ("imports that point up the layers "
                           f"({' < '.join(LAYERS)}):\n  " + "\n  ".join(offending))


def test_argparse_only_in_the_cli_and_benchmark_scripts():
    """Library modules take typed arguments (frozen configs); parsing a command line belongs to
    ``stae_deploy/cli/``, to the scripts of ``benchmarks/`` and to the Triton client (modules with
    a __main__ block)."""
    offending = [
        str(m.path.relative_to(ROOT)) for m in MODULES
        if imports_argparse(m) and m.layer != "cli"
        and not (m.layer in ("serving", "benchmarks") and has_main_block(m))]
    assert not offending, "argparse imported outside the CLI:\n  " + "\n  ".join(offending)
