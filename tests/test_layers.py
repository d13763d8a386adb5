"""The package's layers (DESIGN.md): no import cycle, imports inside functions included, and
the layers below never import the ones above them."""

from __future__ import annotations

import ast
from pathlib import Path

import normreg

ROOT = Path(normreg.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    mods = set(files)
    graph: dict[str, set[str]] = {}
    for me, path in files.items():
        pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # every import, nested ones too
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != me and not me.startswith(n + "."):
                    deps.add(n)
        graph[me] = deps
    return graph


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def test_the_graph_sees_imports():
    g = _graph()
    assert "normreg.penalties" in g["normreg.distributed.sharded"]  # a top-level import
    assert "normreg.prox" in g["normreg.penalties._base"]


def test_no_import_cycle():
    g = _graph()
    cyclic = sorted(m for m in g if m in _reaches(g, m))
    assert not cyclic, f"modules on an import cycle: {cyclic}"


def test_lower_layers_do_not_import_upper_ones():
    g = _graph()
    below = {
        "normreg._bridge": ["normreg._ops", "normreg.penalties", "normreg.prox", "normreg.distributed"],
        "normreg._reference": ["normreg.penalties", "normreg.prox", "normreg.distributed"],
        "normreg.prox": ["normreg.penalties", "normreg.distributed", "normreg.optim"],
        "normreg.penalties": ["normreg.distributed", "normreg.optim", "normreg.gan"],
        "normreg.distributed": ["normreg.optim", "normreg.gan", "normreg.study"],
    }
    for low, uppers in below.items():
        reach = _reaches(g, low)
        bad = [u for u in uppers if u in reach or any(r.startswith(u + ".") for r in reach)]
        assert not bad, f"{low} imports (directly or not) {bad}, a layer above it"
