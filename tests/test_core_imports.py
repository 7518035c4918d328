"""Adapters call the core, never another adapter: the CLI must not import the HTTP layer
(issue 14: ``geobase layers share`` imported set_sharing from the admin router, ``geobase
analysis`` imported the process registry from the analysis router)."""

from __future__ import annotations

import ast
from pathlib import Path

import geobase

CORE = Path(geobase.__file__).parent


def _imports(path: Path) -> list[str]:
    """Every module a file imports, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write the absolute module name")
    return names


def _adapter(module: str) -> bool:
    """The HTTP layer: geobase.api and the web frameworks it is built on."""
    return module in ("geobase.api", "fastapi", "starlette") or module.startswith(
        ("geobase.api.", "fastapi.", "starlette."))


def test_the_cli_never_imports_the_http_api():
    files = sorted((CORE / "cli").glob("*.py"))
    assert len(files) >= 5, files  # the scan must see the CLI modules
    bad = {f"{p.name}: {m}" for p in files for m in _imports(p) if _adapter(m)}
    assert not bad, sorted(bad)


def test_the_services_the_cli_uses_live_in_the_core():
    from geobase.analysis.processes import PROCESSES, run_process
    from geobase.catalog import set_sharing

    assert callable(set_sharing) and callable(run_process) and "tabulate" in PROCESSES
    for name in ("analysis/processes.py", "catalog/__init__.py", "catalog/layers.py", "catalog/state.py",
                 "catalog/departments.py", "jobs.py"):
        mods = _imports(CORE / name)
        assert not [m for m in mods if _adapter(m)], (name, mods)
