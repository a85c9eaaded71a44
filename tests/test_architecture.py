"""The package's shape: no import cycles (imports inside functions included), one home per file name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ecgka"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every ecgka module ``path`` imports, at any depth (functions and TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("ecgka"):
                found.add(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_no_import_cycles_counting_imports_inside_functions():
    modules = _modules()
    # a package's __init__ re-exporting its own submodules is not a cycle of the code's layers
    graph = {m: {i for i in _imports(p, modules) if i != m and not (p.name == "__init__.py" and i.startswith(m))}
             for m, p in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


FOLDER_FILE_NAMES = ["manifest.json", "exclusions.csv", "run.json", "log.jsonl", "config.yaml", "metrics.json",
                     "predictions.parquet", "report.html", "pipeline.json", "best.pt", "last.pt"]


def test_only_the_catalog_spells_dataset_and_run_file_names():
    pattern = re.compile("|".join(re.escape(f'"{n}"') + "|" + re.escape(f"'{n}'") for n in FOLDER_FILE_NAMES))
    offenders = [f"{p.relative_to(PACKAGE.parent)}:{i}" for p in PACKAGE.rglob("*.py") if p.parent.name != "catalog"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


LAYERS = [
    ["ecgka", "ecgka.errors", "ecgka.names", "ecgka.config", "ecgka.io", "ecgka.locks", "ecgka.keys", "ecgka.lazy",
     "ecgka.processes"],
    ["ecgka.labels", "ecgka.catalog"],
    ["ecgka.metrics"],
    ["ecgka.standin", "ecgka.data", "ecgka.age"],
    ["ecgka.models", "ecgka.losses"],
    ["ecgka.training"],
    ["ecgka.evaluation", "ecgka.report"],
    ["ecgka.release"],
    ["ecgka.pipeline", "ecgka.cli", "ecgka.__main__"],
]


def _layer(module: str) -> int:
    best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_metrics_sit_below_training():
    """Model selection (``ecgka.training``) calls the metric functions instead of re-implementing them."""
    assert _layer("ecgka.metrics") < _layer("ecgka.training")
    assert "ecgka.metrics.regression" in _imports(PACKAGE / "training" / "selection.py", _modules())


def test_each_layer_imports_only_the_layers_above_it():
    """docs/architecture.md, "Layers" (same-layer imports are allowed; the cycle test covers those)."""
    modules = _modules()
    upward = sorted(f"{m} -> {i}" for m, p in modules.items() for i in _imports(p, modules) if _layer(i) > _layer(m))
    assert upward == []
