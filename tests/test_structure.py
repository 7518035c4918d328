"""The shape of the code, checked: each concern has one home and data flows one way (issue #14).

These are the acceptance checks of the structural issue, kept as tests so that the structure
does not decay again: the core (``geobase/``) never imports an adapter or FastAPI; no import
circles, counting imports inside functions; the current-row condition and the SQL of catalog
tables live only in their homes; no module or function grows past what a newcomer can read.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# the repo's folders install as subpackages of ``geobase`` (pyproject.toml, package-dir)
PACKAGE_DIRS = {"geobase": "geobase", "geobase.api": "api", "geobase.ingest": "ingest",
                "geobase.tiles": "tiles", "geobase.layer_specs": "layers", "geobase.sample_data": "sample_data"}
ADAPTER_PACKAGES = ("geobase.api", "geobase.ingest", "geobase.tiles", "geobase.cli")
WEB_FRAMEWORKS = ("fastapi", "starlette")

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# data tables, not logic: long because they list things
DATA_TABLE_MODULES = {"geobase/db/migrations/versions/0001_catalog.py"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python module we ship."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts]) if parts else package
            if package == "geobase" and parts and parts[0] in {"api", "ingest", "tiles", "layer_specs", "sample_data"}:
                continue
            found.setdefault(name, path)
    return found


MODULES = _modules()


def _is_core(name: str) -> bool:
    return name == "geobase" or (name.startswith("geobase.") and not name.startswith(
        ADAPTER_PACKAGES + ("geobase.layer_specs", "geobase.sample_data")))


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module this one imports (top level and inside functions), resolved to dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            # ``from geobase import features`` imports the module geobase.features
            out += [(f"{mod}.{alias.name}", node.lineno) for alias in node.names if f"{mod}.{alias.name}" in MODULES]
    return out


def _internal_target(mod: str) -> str | None:
    """The shipped module an import statement loads (longest known prefix)."""
    parts = mod.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def test_core_imports_no_adapter_and_no_web_framework() -> None:
    bad = []
    for name, path in MODULES.items():
        if not _is_core(name):
            continue
        for mod, line in _imports(name, path):
            if mod.split(".")[0] in WEB_FRAMEWORKS or mod.startswith(ADAPTER_PACKAGES) \
                    or mod.startswith(("geobase.sample_data",)):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "the core imports an adapter or a web framework:\n" + "\n".join(bad)


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for mod, _ in _imports(name, path):
            target = _internal_target(mod)
            if target and target != name and not name.startswith(target + "."):
                # importing a submodule runs its package's __init__ first, but that is not a
                # dependency of the package on the submodule's importer; count the module itself
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_counting_imports_inside_functions() -> None:
    graph = _graph()
    # a package's __init__ that re-exports its submodules is not a circle with them
    for name in list(graph):
        graph[name] = {t for t in graph[name] if not (t.startswith(name + ".") and MODULES[name].name == "__init__.py")}
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _python_files() -> list[Path]:
    return sorted(p for folder in PACKAGE_DIRS.values() for p in (ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_no_module_over_400_lines() -> None:
    long = [f"{_rel(p)}: {n} lines" for p in _python_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
            and _rel(p) not in DATA_TABLE_MODULES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_no_function_over_80_lines() -> None:
    long = []
    for path in _python_files():
        if _rel(path) in DATA_TABLE_MODULES:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{_rel(path)}:{node.lineno} {node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


# where each piece of storage knowledge lives (a table name in SQL: ``geobase.catalog.layers``, the
# module, and ``x_catalog.layer_versions(...)``, an attribute, are not SQL)
SQL_HOMES = {
    # the current-row and as-of conditions of versioned rows
    r"\b_vto\b": ("geobase/storage.py", "geobase/catalog/"),
    # catalog tables about layers, versions and departments
    r"(?<![\w.])catalog\.(layers|layer_versions|departments)\b": ("geobase/catalog/", "geobase/storage.py"),
    # jobs of every kind: one job manager
    r"(?<![\w.])catalog\.jobs\b": ("geobase/jobs.py",),
    r"(?<![\w.])catalog\.api_keys\b": ("geobase/keys.py",),
    r"(?<![\w.])catalog\.audit_log\b": ("geobase/audit.py",),
}
SQL_HOME_EXEMPT = ("geobase/db/migrations/",)


def _prose_lines(source: str) -> set[int]:
    """Lines of docstrings and comments: prose may name a table, only code may query it."""
    lines = {n for n, text in enumerate(source.splitlines(), 1) if text.lstrip().startswith("#")}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


@pytest.mark.parametrize("pattern", sorted(SQL_HOMES))
def test_storage_knowledge_lives_in_one_home(pattern: str) -> None:
    homes = SQL_HOMES[pattern]
    stray = []
    for path in _python_files():
        rel = _rel(path)
        if rel.startswith(homes) or rel.startswith(SQL_HOME_EXEMPT):
            continue
        source = path.read_text(encoding="utf-8")
        prose = _prose_lines(source)
        for number, line in enumerate(source.splitlines(), 1):
            if number not in prose and re.search(pattern, line):
                stray.append(f"{rel}:{number}: {line.strip()[:100]}")
    assert not stray, f"{pattern} outside {homes}:\n" + "\n".join(stray)


def test_one_layer_state_class() -> None:
    defined = [f"{_rel(p)}" for p in _python_files()
               if re.search(r"^class LayerState\b", p.read_text(encoding="utf-8"), re.M)]
    assert len(defined) == 1, f"LayerState defined in {defined}"
