"""The package's shape, held to what the README says: imports point one way (core <-
catalog <- server; core <- client <- mount; the CLI on top, imported by nothing), no
module imports another in a loop, and the mount daemon never loads the server's HTTP
stack."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ROOT

PACKAGE = ROOT / "metafs"
#: each side, and the sides it may import (the core is everything not named here)
SIDES = {
    "catalog": set(),
    "server": {"catalog"},
    "client": set(),
    "mount": {"client"},
    "cli": {"client", "server", "mount", "catalog"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def side(module: str) -> str:
    name = module.split(".")[1] if module.count(".") else ""
    return name if name in SIDES else "core"


def imports() -> dict[str, set[str]]:
    """Each metafs module and the metafs modules it imports (at any depth in its code)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        mod = module_name(path)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                for alias in node.names:  # `from . import x` may name a module
                    named = f"{target}.{alias.name}"
                    if (ROOT / (named.replace(".", "/") + ".py")).exists():
                        found.add(named)
                found.add(target)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[mod] = {m for m in found if m == "metafs" or m.startswith("metafs.")} - {mod}
    return graph


def test_imports_point_one_way() -> None:
    wrong = []
    for mod, targets in imports().items():
        for target in targets:
            a, b = side(mod), side(target)
            if target == "metafs" or a == b or b == "core":
                continue
            if a == "core" or b not in SIDES[a]:  # the core imports no side
                wrong.append(f"{mod} ({a}) imports {target} ({b})")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_module_imports_another_in_a_loop() -> None:
    graph = imports()
    # a package's __init__ only describes it: leave faces out, as Python resolves them lazily
    edges = {
        m: {t for t in ts if t in graph and not (PACKAGE / t.replace("metafs.", "", 1)).is_dir()}
        for m, ts in graph.items()
    }
    state: dict[str, int] = {}
    loops: list[str] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                loops.append(" -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for mod in sorted(edges):
        if mod not in state:
            visit(mod, [mod])
    assert not loops, "\n".join(loops)


@pytest.mark.timeout(60)
def test_the_mount_side_and_the_cli_never_load_the_http_server() -> None:
    code = (
        "import sys, metafs.cli.main, metafs.mount.daemon, metafs.mount.status;"
        "print(sorted(m for m in ('starlette', 'uvicorn', 'metafs.server.app') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
