"""Nothing is declared that nothing uses: every runtime dependency in pyproject.toml is imported
by the package, every test dependency by the tests (or is a tool, named below with its use)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Distributions whose module has another name.
MODULE_NAMES = {"pyyaml": "yaml", "scikit-learn": "sklearn", "optuna-dashboard": "optuna_dashboard"}
#: Declared, used without an import statement of their own.
USED_OTHERWISE = {
    "psycopg": "SQLAlchemy loads it for postgresql+psycopg:// storage URLs",
    "ruff": "the linter [tool.ruff] configures: a command, not a module",
    "accelerate": "transformers imports it to load a GGUF checkpoint (the embedded SmolLM2)",
}


def _project() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        from helpers import require

        tomllib = require("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _module(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
    return MODULE_NAMES.get(name, name)


def _imported(*folders: str) -> set[str]:
    """Top-level modules named by absolute import statements anywhere in ``folders``, or
    imported by the tests' ``require("module")`` / ``pytest.importorskip("module")``."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
                elif isinstance(node, ast.Call) and _imports_by_name(node):
                    found.add(node.args[0].value.split(".")[0])
    return found


def _imports_by_name(call: ast.Call) -> bool:
    name = getattr(call.func, "id", getattr(call.func, "attr", ""))
    return (name in ("require", "importorskip") and len(call.args) == 1
            and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str))


def _unused(requirements: list[str], imported: set[str]) -> list[str]:
    return [r for r in requirements if _module(r) not in imported | set(USED_OTHERWISE)]


def test_every_runtime_dependency_is_imported_by_the_package():
    project = _project()
    runtime = project["dependencies"] + project["optional-dependencies"]["postgres"]
    assert _unused(runtime, _imported("lorasweep")) == []


def test_every_test_dependency_is_used_by_the_tests():
    dev = _project()["optional-dependencies"]["dev"]
    assert _unused(dev, _imported("tests", "benchmarks")) == []


@pytest.mark.parametrize("requirement", ["evaluate>=0.4", "some-package"])
def test_an_unused_declaration_is_found(requirement):
    assert _unused([requirement], _imported("lorasweep")) == [requirement]
