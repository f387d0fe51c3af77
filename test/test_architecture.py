"""The package's structure holds: import contracts (import-linter, contracts in pyproject.toml) and no import cycle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    # lint-imports finds h1_training through sys.path: this checkout's src/ first
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    out.append(sorted(component))
    return out


def test_strongly_connected_finds_a_cycle():
    # the checker itself: a -> b -> c -> a is one cycle, d hangs off it
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_the_package():
    sys.path.insert(0, str(ROOT / "src"))
    try:
        graph = grimp.build_graph("h1_training", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT / "src"))
    modules = {m for m in graph.modules if m.startswith("h1_training")}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in modules} for m in modules}
    cycles = strongly_connected(edges)
    details = []
    for cycle in cycles:
        chain = graph.find_shortest_chain(cycle[0], cycle[1]) or ()
        back = graph.find_shortest_chain(cycle[1], cycle[0]) or ()
        details.append(f"{' -> '.join(chain)} ; {' -> '.join(back)}")
    assert not cycles, "import cycles:\n" + "\n".join(details)


def test_every_name_imported_from_the_package_exists():
    """Function-local imports (kept local so torch or rclpy load only when needed) run only on their code path: a
    module move that forgets one breaks that path at run time (a training job on the server, say). Resolve them
    all here, statically, for every ``from h1_training... import name`` in the package."""
    import ast
    import importlib

    missing = []
    for path in sorted((ROOT / "src" / "h1_training").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == "h1_training"):
                continue
            try:
                module = importlib.import_module(node.module)
            except ImportError as exc:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module} ({exc})")
                continue
            for alias in node.names:
                if alias.name == "*" or hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name} from {node.module}")
    assert not missing, "imports that fail when their code runs:\n" + "\n".join(missing)
