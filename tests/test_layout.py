"""The shape of the code: one reader of the environment, no import cycles, bounded sizes.

These are the promises of the restructuring; a change that breaks one fails here instead of
silently growing the house back into a few large rooms.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("clay_core", "clay_assets")
MAX_MODULE, MAX_ASSET_MODULE, MAX_FUNCTION = 900, 150, 80


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = path
    return out


def test_only_config_reads_the_environment():
    offenders = []
    for name, path in _modules().items():
        if name == "clay_assets.config":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"os\.environ|getenv\(", line):
                offenders.append(f"{path.relative_to(ROOT)}:{i}")
    assert offenders == []


def test_clay_core_never_imports_dagster():
    for name, path in _modules().items():
        if name.startswith("clay_core"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                assert not any(m.split(".")[0].startswith("dagster") for m in mods), name


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules ``name`` imports, at module level or lazily inside a function: a lazy
    import only hides a cycle from Python, the two modules still depend on each other."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(node)}  # annotations only: never imported at run time
    found = set()
    for n in ast.walk(tree):
        if id(n) in typing_only:
            continue
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            found.add(n.module)
            found |= {f"{n.module}.{a.name}" for a in n.names}
    return {m for m in found if m in known and m != name}


def test_no_import_cycles():
    mods = _modules()
    graph = {n: _imports(n, p, set(mods)) for n, p in mods.items()}
    # a package imports its submodules for its face; a submodule importing its own package
    # face back would be a cycle, which the search below finds like any other.
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for m in graph[n]:
            visit(m)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert [" -> ".join(c) for c in cycles] == []


def test_sizes():
    over = []
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        limit = MAX_ASSET_MODULE if name.startswith("clay_assets.assets.") else MAX_MODULE
        if lines > limit:
            over.append(f"{name}: {lines} lines > {limit}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION:
                    over.append(f"{name}.{node.name}: {n} lines > {MAX_FUNCTION}")
    assert over == []


def test_every_clay_core_package_has_a_public_face():
    for pkg in sorted((ROOT / "clay_core").iterdir()):
        init = pkg / "__init__.py"
        if pkg.is_dir() and init.is_file():
            tree = ast.parse(init.read_text())
            assert ast.get_docstring(tree), f"{pkg.name}: no docstring"
            names = [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
            assert "__all__" in names, f"clay_core.{pkg.name} has no __all__"
