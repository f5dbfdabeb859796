"""Imports flow one way: adapters (app, api, queue, direct) -> service -> core -> stdlib and pydantic."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

HANDLER = Path(__file__).resolve().parents[2] / "src" / "handler"
CORE = {"models", "errors", "ports", "zim_client", "kickout", "zim", "deadline"}
ADAPTERS = {"app", "api", "api_request", "api_responses", "queue", "redelivery", "direct"}


def imported(module: str) -> set[str]:
    """The top-level names (`boto3`, `handler.zim`, ...) a module of src/handler imports, at any depth."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((HANDLER / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "handler":
                names.update(f"handler.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_imports_only_the_standard_library_pydantic_and_the_core(module: str) -> None:
    for name in imported(module):
        top = name.split(".")[0]
        if top == "handler":
            assert name.split(".")[1] in CORE, f"{module} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top == "pydantic", f"{module} imports {name}"


@pytest.mark.parametrize("module", sorted(CORE))
def test_the_core_reads_no_environment(module: str) -> None:
    assert "os.environ" not in (HANDLER / f"{module}.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("module", sorted({path.stem for path in HANDLER.glob("*.py")} - ADAPTERS))
def test_nothing_below_the_adapters_imports_an_adapter(module: str) -> None:
    assert not {name.removeprefix("handler.") for name in imported(module)} & ADAPTERS, module
