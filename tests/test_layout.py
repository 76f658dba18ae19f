"""The package layout is the architecture: imports go one way, and no module imports itself back.

Read from the source (every ``import``, lazy ones inside functions included), so a new import that
goes back up or closes a circle fails here rather than in a reader's head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import imgdist

ROOT = Path(imgdist.__file__).parent

#: what each wing may import from imgdist (besides itself): one direction only
ALLOWED = {
    "metrics": {"checks", "errors", "formatting"},
    "extraction": {"checks", "errors", "defaults", "environment", "files", "metrics", "__init__"},
    "evaluation": {"checks", "errors", "defaults", "environment", "files", "formatting", "metrics", "extraction",
                   "__init__"},
    "pairs": {"checks", "errors", "defaults", "environment", "files", "formatting", "metrics", "extraction",
              "__init__"},
    "report": {"checks", "errors", "defaults", "files", "formatting", "metrics", "extraction", "evaluation",
               "__init__"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of the imgdist modules ``path`` imports (a ``from X import name`` counts the
    submodule ``X.name`` where one exists)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("imgdist"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if _exists(sub) else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("imgdist"))
    out.discard(mod)
    return out


def _exists(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _graph() -> dict[str, set[str]]:
    return {_module(p): _imports(p) for p in ROOT.rglob("*.py")}


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circles():
    graph = _graph()
    # the package __init__ files only re-export lazily; an edge into a package means its __init__
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, circles


def test_wings_import_one_way():
    back = []
    for module, targets in _graph().items():
        wing = _wing(module)
        if wing not in ALLOWED:
            continue  # the entry points (cli, demo) and shared helpers
        for target in targets:
            other = _wing(target)
            if other != wing and other not in ALLOWED[wing]:
                back.append(f"{module} -> {target}")
    assert not back, back
