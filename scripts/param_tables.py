#!/usr/bin/env python3
"""The README's parameter tables, generated from the nodes' config dataclasses (the one declaration).

    python scripts/param_tables.py           # exit 1 and name the tables that differ from the code
    python scripts/param_tables.py --write   # rewrite them in README.md

Each node's table sits between ``<!-- params:EXECUTABLE -->`` and ``<!-- /params:EXECUTABLE -->`` in README.md.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def node_params(executable: str) -> type | None:
    """The config dataclass (``PARAMS``) of a node executable, None for a node without parameters."""
    from h1_training.executables import NODES

    module = importlib.import_module(NODES[executable].partition(":")[0])
    found = [v.PARAMS for v in vars(module).values()
             if isinstance(v, type) and v.__module__ == module.__name__ and getattr(v, "PARAMS", None) is not None]
    return found[0] if found else None


def tables() -> dict[str, str]:
    from h1_training.executables import NODES
    from h1_training.params import markdown_table, param_specs

    out = {}
    for exe in NODES:
        cls = node_params(exe)
        if cls is not None:
            out[exe] = markdown_table(param_specs(cls))
    return out


def _block(exe: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- params:{re.escape(exe)} -->\n)(.*?)(<!-- /params:{re.escape(exe)} -->)", re.S)


def render(readme: str, generated: dict[str, str]) -> tuple[str, list[str]]:
    """(README with every table replaced, problems: nodes without markers)."""
    problems = []
    for exe, table in generated.items():
        pattern = _block(exe)
        if not pattern.search(readme):
            problems.append(f"README.md has no <!-- params:{exe} --> ... <!-- /params:{exe} --> block")
            continue
        readme = pattern.sub(lambda m, t=table: m.group(1) + "\n" + t + "\n\n" + m.group(3), readme)
    return readme, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite the tables in README.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    current = README.read_text()
    updated, problems = render(current, tables())
    for problem in problems:
        print(problem, file=sys.stderr)
    if args.write:
        README.write_text(updated)
        return 1 if problems else 0
    if updated != current:
        print("README.md parameter tables differ from the code: run scripts/param_tables.py --write",
              file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
