"""The layer rules of the layout, read from the code's own imports.

``hil → node → drivers, models``, one way: drivers and models import nothing of
ours outside themselves, production code never imports ``hil``, ``tests`` or
``bench``, the stages of a part (``node/line``) and the recipe they apply
(``node/recipe``) import only the node's core,
only the node's lifecycle, config and CLI import the north-bound publisher,
``hil`` uses public names only, and no module imports itself round a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OURS = ("node", "drivers", "models", "hil", "tests", "bench")

ALLOWED: dict[str, tuple[str, ...]] = {
    "drivers": ("drivers",),
    "models": ("models",),
    "node": ("node", "drivers", "models"),
    "hil": ("hil", "node", "drivers", "models"),
}
"""Which of our top-level packages each production package may import."""

LINE_MAY_IMPORT = (
    "node.line",
    "node.config",
    "node.errors",
    "node.recipe",
    "node.service",
    "drivers",
    "models",
)
"""``node/line`` is the part's path: it may lean on the node's core (the recipe the judge
applies is core), never on the HMI, audit trail, command line or simulation built around it."""

WEB_IMPORTED_BY = ("node.web", "node.config", "node.__main__")
"""``node/web`` is another process beside the node: only its own modules, the config (its
``[web]`` settings) and the command line (its ``web`` command) may import it, so the node's
process never loads, let alone runs, web code."""

NORTH_IMPORTED_BY = (
    "node.north",
    "node.config",
    "node.app",
    "node.wiring",
    "node.__main__",
    "node.cli",
    "node.fleet",
    "node.web",
)
"""``node/north`` (the Sparkplug B edge node) hangs off the node's lifecycle: only its own
modules, the config (``[north]``), the node that opens it, the command line, and the other
ends of its protocol (the fleet host; the web, which serves the collect path) import it —
never the line's stages, the recorder or the HMI it must stay out of the way of."""


@dataclass(frozen=True)
class Import:
    """One import statement: which module, where, of which names."""

    module: str
    target: str
    names: tuple[str, ...]
    line: int
    type_only: bool


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(root: Path, path: Path) -> Iterator[Import]:
    """Every import in ``path`` (lazy ones inside functions included)."""
    module = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only_lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    type_only_lines.add(inner.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno, node.lineno in type_only_lines)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = tuple(a.name for a in node.names)
            yield Import(module, node.module, names, node.lineno, node.lineno in type_only_lines)


def all_imports(root: Path, packages: tuple[str, ...]) -> list[Import]:
    out: list[Import] = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            out.extend(imports_of(root, path))
    return out


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_violations(root: Path) -> list[str]:
    """Every import that breaks a layer rule, as ``module:line imports target (rule)``."""
    problems = []
    for imp in all_imports(root, tuple(ALLOWED)):
        top = _top(imp.target)
        if top in OURS and top not in ALLOWED[_top(imp.module)]:
            problems.append(f"{imp.module}:{imp.line} imports {imp.target} (layers)")
        for stage in ("node.line", "node.recipe"):
            inside = _within(imp.module, (stage,)) and top in OURS
            if inside and not _within(imp.target, LINE_MAY_IMPORT):
                where = stage.replace(".", "/")
                problems.append(f"{imp.module}:{imp.line} imports {imp.target} ({where})")
        if _within(imp.target, ("node.web",)) and not _within(imp.module, WEB_IMPORTED_BY):
            problems.append(f"{imp.module}:{imp.line} imports {imp.target} (node/web)")
        if _within(imp.target, ("node.north",)) and not _within(imp.module, NORTH_IMPORTED_BY):
            problems.append(f"{imp.module}:{imp.line} imports {imp.target} (node/north)")
        if _top(imp.module) == "hil" and top in ("node", "drivers", "models"):
            private = [n for n in imp.names if n.startswith("_")]
            if private:
                problems.append(f"{imp.module}:{imp.line} imports private {private} (public API)")
    return problems


def private_attribute_uses(root: Path, package: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self``/``cls``: reaching into another object."""
    problems = []
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                problems.append(f"{module_name(root, path)}:{node.lineno} uses .{node.attr}")
    return problems


def import_cycles(root: Path) -> list[list[str]]:
    """Circles of modules importing each other (type-only imports aside)."""
    modules = {module_name(root, p) for pkg in ALLOWED for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in all_imports(root, tuple(ALLOWED)):
        if imp.type_only:
            continue
        targets = [f"{imp.target}.{n}" for n in imp.names] + [imp.target]
        target = next((t for t in targets if t in modules), None)
        if target is not None and target != imp.module:
            graph[imp.module].add(target)
    cycles: list[list[str]] = []
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                cycles.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


def test_the_tree_keeps_its_layers() -> None:
    """drivers/models import nothing of ours, node no hil, node/line and node/recipe only
    the node's core, and nothing of the node's process the web view's code."""
    assert layer_violations(REPO) == []


def test_hil_uses_public_names_only() -> None:
    """The rig drives the node, drivers and models through their public APIs."""
    assert private_attribute_uses(REPO, "hil") == []


def test_no_module_imports_itself_round_a_circle() -> None:
    """No two production modules import each other, directly or round a circle."""
    assert import_cycles(REPO) == []


@pytest.mark.parametrize(
    ("where", "source", "rule"),
    [
        ("drivers/plc/extra.py", "import node.app\n", "layers"),
        ("models/extra.py", "from drivers.plc.base import RejectCommand\n", "layers"),
        ("node/extra.py", "def f() -> None:\n    from hil.line import run_line\n", "layers"),
        ("node/line/extra.py", "from node.hmi.server import HmiServer\n", "node/line"),
        ("node/recipe/extra.py", "from node.audit.store import AuditStore\n", "node/recipe"),
        ("node/hmi/extra.py", "def f() -> None:\n    import node.web.feed\n", "node/web"),
        ("node/recorder.py", "from node.north.sparkplug import encode\n", "node/north"),
        ("hil/extra.py", "from drivers.sim.world import _Segment\n", "public API"),
    ],
)
def test_a_broken_rule_is_caught(tmp_path: Path, where: str, source: str, rule: str) -> None:
    """An import that breaks a rule, even a lazy one, is reported with its module and line."""
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    target = tmp_path / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    (problem,) = layer_violations(tmp_path)
    assert problem.startswith(module_name(tmp_path, target) + ":") and f"({rule})" in problem


def test_a_circle_is_caught(tmp_path: Path) -> None:
    """Two hil modules importing each other (one lazily) form a reported circle."""
    for package in ALLOWED:
        (tmp_path / package).mkdir()
    (tmp_path / "hil" / "a.py").write_text("from hil.b import x\n")
    (tmp_path / "hil" / "b.py").write_text("def x() -> None:\n    from hil.a import y\n")
    assert import_cycles(tmp_path) == [["hil.a", "hil.b"]]
