"""The import direction between the sub-packages, as data: each package may import only those on later floors.

    cli -> tracking -> training -> (inference | checks) -> (models | reporting) -> (data | runtime) -> core -> errors

`python -m catdog_cli.layers` lists every import against it (and every import circle between modules) and
exits 1 if there is one; `nox -s lint` runs it. Function-level and TYPE_CHECKING imports count too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

# floors, top to bottom; packages on one floor may not import each other
FLOORS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("tracking",),  # listens to what training tells the CLI (Events, the final record); training never imports it
    ("training",),
    ("inference", "checks"),
    ("models", "reporting"),
    ("data", "runtime"),
    ("core",),
    ("errors",),
)
FLOOR = {package: i for i, floor in enumerate(FLOORS) for package in floor}
ROOT = Path(__file__).resolve().parent
# the root's own modules: the lazy public API and `python -m catdog_cli` sit above every floor; this file reads
# only the standard library
ABOVE = {"__init__", "__main__", "layers"}


def package_of(module: str) -> str:
    """'catdog_cli.training.loop' -> 'training'; 'catdog_cli.errors' -> 'errors'; 'catdog_cli' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, module: str, root: Path = ROOT) -> Iterator[tuple[int, str]]:
    """(line, imported catdog_cli module) for every import in a file, wherever it stands."""
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("catdog_cli"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            if not base.startswith("catdog_cli"):
                continue
            for a in node.names:  # `from catdog_cli.pkg import module` names a module, not a definition
                sub = f"{base}.{a.name}"
                yield node.lineno, sub if _is_module(sub, root) else base


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:])
    return (root / rel).with_suffix(".py").exists() or (root / rel / "__init__.py").exists()


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = ["catdog_cli", *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def violations(root: Path = ROOT) -> list[str]:
    """Every import against the floors, and every circle between modules; empty when the layout holds."""
    found: list[str] = []
    graph: dict[str, set[str]] = {}
    for module, path in modules(root).items():
        mine = package_of(module)
        graph[module] = set()
        for line, target in imports(path, module, root):
            theirs = package_of(target)
            if target != "catdog_cli":
                graph[module].add(target)
            if mine in ABOVE or theirs == mine or (theirs == "__init__" and target == "catdog_cli"):
                continue
            if theirs in ABOVE or mine not in FLOOR or theirs not in FLOOR or FLOOR[theirs] <= FLOOR[mine]:
                found.append(
                    f"{path.relative_to(root.parent)}:{line}: {module} imports {target} "
                    f"({mine} may not import {theirs})"
                )
    found.extend(f"import circle: {' -> '.join(c)}" for c in _circles(graph))
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle between modules, each as a path that closes on its start."""
    edges = {module: {t for t in targets if t in graph} for module, targets in graph.items()}
    found = []
    while True:
        try:
            tuple(TopologicalSorter(edges).static_order())
            return found
        except CycleError as e:
            cycle = list(reversed(e.args[1]))
            found.append(cycle)
            edges[cycle[0]].discard(cycle[1])  # report each circle once, then look for the next


def main() -> int:
    found = violations()
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
