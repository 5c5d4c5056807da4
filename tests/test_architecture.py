"""The package's layering (docs/architecture.md): each group of `benchmarks/` imports only the groups below it, and
the report layer loads no torch (tables render on a machine without it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from waiting import SAFETY_NET_S

PACKAGE = Path(__file__).resolve().parent.parent / "benchmarks"
# Bottom to top, as in docs/architecture.md; a module may import its own group and the groups before it.
LAYERS = [
    ("benchmarks.io", "benchmarks.specs", "benchmarks.suite"),
    ("benchmarks.store",),
    ("benchmarks.data",),
    ("benchmarks.protocols",),
    ("benchmarks.training",),
    ("benchmarks.evaluation",),
    ("benchmarks.execution",),
    ("benchmarks.studies",),
    ("benchmarks.reporting",),
    ("benchmarks.cli", "benchmarks.suites"),
]


def layer_of(module: str) -> int | None:
    for level, groups in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in groups):
            return level
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, package: str) -> set[str]:
    """Every benchmarks module imported anywhere in the file (also inside functions: a late import is a dependency)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the importing package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}  # `from benchmarks import x` imports x
    return {n for n in names if n == "benchmarks" or n.startswith("benchmarks.")}


def test_layer_of_places_modules() -> None:  # guards the check below against a mapping that matches nothing
    assert layer_of("benchmarks.reporting.tables") > layer_of("benchmarks.evaluation.metrics") > layer_of(
        "benchmarks.store.records") > layer_of("benchmarks.specs")
    assert layer_of("benchmarks.reportingx") is None


def test_every_module_imports_only_lower_groups() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 20
    problems = []
    for path in modules:
        name = module_name(path)
        level = layer_of(name)
        if name == "benchmarks":
            continue
        assert level is not None, f"{name} belongs to no group of LAYERS: add it there and to docs/architecture.md"
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for target in imported(ast.parse(path.read_text(encoding="utf-8")), package):
            target_level = layer_of(target)
            if target_level is not None and target_level > level:
                problems.append(f"{name} (group {level}) imports {target} (group {target_level})")
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def test_an_upward_import_is_caught() -> None:
    tree = ast.parse("def f():\n    from benchmarks.reporting import tables\n")
    found = imported(tree, "benchmarks.store")
    assert any(layer_of(t) > layer_of("benchmarks.store.records") for t in found)


@pytest.mark.parametrize("module", ["benchmarks.specs", "benchmarks.reporting.leaderboard", "benchmarks.reporting.page",
                                    "benchmarks.reporting.plots", "benchmarks.reporting.claims",
                                    "benchmarks.reporting.reproduce", "benchmarks.reporting.convergence",
                                    "benchmarks.reporting.studies",
                                    "benchmarks.reporting.paper_claims.board", "benchmarks.reporting.depth_transfer"])
def test_report_layer_loads_no_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                            timeout=SAFETY_NET_S)
    assert result.returncode == 0, result.stderr[-2000:]


def test_specs_module_loads_no_pandas() -> None:
    code = "import sys, benchmarks.specs; assert not {'torch', 'pandas'} & set(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                            timeout=SAFETY_NET_S)
    assert result.returncode == 0, result.stderr[-2000:]


ZOO = PACKAGE.parent / "zoo"
MODELS = ZOO / "models"
# The engine is zoo/ itself (docs/architecture.md); the families are the modules of zoo/models/. Only the package's
# entry points (`zoo`, importing the families; `zoo._moved`, the families' old paths) may name zoo.models.
ENTRY_POINTS = {"zoo", "zoo._moved"}


def zoo_module(path: Path) -> str:
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def zoo_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if node.module == "zoo"}
    return {n for n in names if n.split(".")[0] in ("zoo", "benchmarks")}


def is_family(module: str) -> bool:
    return module.startswith("zoo.models.")


def test_zoo_is_the_engine_and_zoo_models_the_families() -> None:
    engine = sorted(ZOO.glob("*.py"))
    families = sorted(p for p in MODELS.glob("*.py") if p.name != "__init__.py")
    assert {p.stem for p in engine} >= {"registry", "cards", "contract", "integrate", "tableaus", "template"}
    assert {p.stem for p in families} >= {"resnet", "neural_ode", "anode", "continuousnet", "inresnet"}
    problems = []
    for path in [*engine, *MODELS.glob("*.py")]:
        name = zoo_module(path)
        for target in zoo_imports(path):
            if target.startswith("benchmarks"):
                problems.append(f"{name} imports {target}: zoo sits below benchmarks")
            elif is_family(name) and is_family(target):
                problems.append(f"family {name} imports family {target}: shared pieces belong in the engine")
            elif not is_family(name) and name != "zoo.models" and name not in ENTRY_POINTS and (
                    is_family(target) or target == "zoo.models"):
                problems.append(f"engine module {name} imports the families ({target}): the engine sits below them")
    assert not problems, "\n".join(problems)


def test_an_engine_module_importing_a_family_is_caught(tmp_path) -> None:
    path = tmp_path / "x.py"
    path.write_text("from zoo.models.resnet import RESNET_CARD\nfrom zoo import models\n")
    assert {"zoo.models.resnet", "zoo.models"} <= zoo_imports(path)


def test_every_table_column_has_its_place_in_the_column_order() -> None:
    # A spec shown in the tables but missing from the order would silently stay out of them.
    from benchmarks.specs import SPECS, TABLE_HEAD, TABLE_TAIL

    shown = {s.pattern for s in SPECS if s.shown == "table" and not s.attack}
    assert shown == set(TABLE_HEAD) | set(TABLE_TAIL)


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """The import statements that run when the module is imported: outside functions and `if TYPE_CHECKING:`."""
    found: list[ast.stmt] = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.Try):
                walk(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])
            elif isinstance(node, (ast.With, ast.For, ast.While)):
                walk(node.body)

    walk(tree.body)
    return found


def import_graph(roots: list[Path], late: bool) -> dict[str, set[str]]:
    """Module -> the modules of `roots` it imports: at module level, or also inside functions with `late`."""
    files = {}
    for root in roots:
        for path in root.rglob("*.py"):
            parts = path.relative_to(root.parent).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        nodes = ast.walk(tree) if late else _module_level(tree)
        targets = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: its strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:  # guards the checks below against a finder that finds nothing
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_execution_has_no_import_cycle() -> None:
    """benchmarks/execution: no circle even through late imports (inside functions), which are dependencies too: the
    runner plans and picks an executor, runs.py and executors.py run, slurm.py imports them, never the runner."""
    graph = import_graph([PACKAGE, ZOO], late=True)
    execution = {name: {t for t in targets if t.startswith("benchmarks.execution")}
                 for name, targets in graph.items() if name.startswith("benchmarks.execution")}
    assert len(execution) > 10
    assert not cycles(execution), cycles(execution)


def test_no_module_level_import_cycle_in_benchmarks_or_zoo() -> None:
    """What runs on import: no module of benchmarks/ or zoo/ imports, at module level, one that imports it back."""
    graph = import_graph([PACKAGE, ZOO], late=False)
    assert "benchmarks.execution.runs" in graph["benchmarks.execution.runner"]
    assert not cycles(graph), cycles(graph)


def test_no_late_import_cycle_in_benchmarks_but_the_known_one() -> None:
    """Late imports (inside functions) count too: the one circle left is paper_claims' sources reading the declared
    claims at call time (zoo's engine modules and its package reach each other the same way)."""
    graph = import_graph([PACKAGE, ZOO], late=True)
    found = [c for c in cycles(graph) if c[0].startswith("benchmarks")]
    assert found == [["benchmarks.reporting.paper_claims.declared", "benchmarks.reporting.paper_claims.sources"]]
