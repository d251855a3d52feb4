"""The package's layers stay one-way: each imports only from the layers below it, and nothing hides a
dependency inside a function except where the command line keeps its start-up light."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "ssd"
# A command module imports its heavy dependencies inside `run` (see ssd.cli.main), so `ssd --help` and a
# command whose optional dependency is missing do not pay for, or fail on, another command's imports.
FUNCTION_LEVEL_IMPORTS_ALLOWED = PACKAGE / "cli" / "commands"


def test_import_contracts_hold(monkeypatch):
    """pyproject.toml's import-linter contracts: the layers, and no cycle between a package's modules."""
    cli = pytest.importorskip("importlinter.cli", reason="import-linter checks the layers (a dev dependency)")
    monkeypatch.chdir(ROOT)
    assert cli.lint_imports(no_cache=True, no_logo=True) == 0, "a contract is broken: run `lint-imports`"


def _function_level_package_imports(path: Path) -> list[str]:
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # for type annotations only; never runs
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if (
                in_function
                and isinstance(child, ast.ImportFrom)
                and (child.module or "").split(".")[0] == "ssd"
            ):
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}: {ast.unparse(child)}")
            if (
                in_function
                and isinstance(child, ast.Import)
                and any(a.name.split(".")[0] == "ssd" for a in child.names)
            ):
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}: {ast.unparse(child)}")
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def test_the_package_imports_its_own_modules_at_the_top():
    hidden = [
        line
        for path in sorted(PACKAGE.rglob("*.py"))
        if FUNCTION_LEVEL_IMPORTS_ALLOWED not in path.parents
        for line in _function_level_package_imports(path)
    ]
    assert hidden == [], "imports inside functions hide dependencies:\n" + "\n".join(hidden)
