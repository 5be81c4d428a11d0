"""No import circles among amos-zoo's modules: the graph of every ``import`` (module level, inside functions and under
``TYPE_CHECKING``, and the lazy package faces' ``_MODULES`` tables), read with ``ast``, has no cycle, and the plain
records sit at the bottom (protocol cards <- recipe <- model card <- the builders of networks and transforms)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "amos_zoo"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """amos-zoo module -> the amos-zoo modules it imports (a name imported from a package counts as the package)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x / from ..y import z
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_MODULES" for t in node.targets):
                names = [k.value for k in getattr(node.value, "keys", []) if isinstance(k, ast.Constant)]
            for name in names:
                target = resolve(name) if isinstance(name, str) and name.startswith("amos_zoo") else None
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_amos_zoo_modules():
    graph = import_graph()
    assert len(graph) > 50 and "amos_zoo.card" in graph
    assert graph["amos_zoo.models.registry"] >= {"amos_zoo.card"}  # the builder knows the record
    assert cycles(graph) == []


def test_records_sit_at_the_bottom():
    """protocol cards and shipped configs import nothing of amos-zoo; the recipe reads only the protocol cards;
    the model card holds only its recipe; neither record imports a builder (networks, transforms, registries)."""
    graph = import_graph()
    assert graph["amos_zoo.protocols"] == set() and graph["amos_zoo.config_files"] == set()
    assert graph["amos_zoo.data.recipes"] == {"amos_zoo.protocols"}
    assert graph["amos_zoo.card"] == {"amos_zoo.data.recipes"}


def _runs_in_a_fresh_interpreter(code: str) -> None:
    """``code`` (which asserts what it imported) exits 0 in a new Python process: nothing imported before it."""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_model_card_loads_without_torch_monai_or_the_registries():
    code = (
        "import sys; from amos_zoo.card import ModelCard; from amos_zoo.data.recipes import get_recipe; "
        "card = ModelCard('unet', recipe=get_recipe('btcv')); assert ModelCard.from_dict(card.to_dict()) == card; "
        "loaded = [m for m in ('torch', 'monai', 'amos_zoo.models.registry', 'amos_zoo.data.transforms') "
        "if m in sys.modules]; assert not loaded, loaded"
    )
    _runs_in_a_fresh_interpreter(code)


def test_evaluating_imports_neither_torch_nor_monai():
    """`amos-zoo evaluate` and the metric suite score label files without torch or MONAI (surface.py ships MONAI's
    normal table), so evaluation starts in about a second."""
    code = (
        "import sys, numpy as np; from amos_zoo.metrics.case import evaluate_case; "
        "from amos_zoo.metrics.evaluate import evaluate_folders; "
        "gt = np.zeros((12, 12, 8), np.uint8); gt[3:8, 3:8, 2:6] = 1; pred = np.roll(gt, 1, 0); "
        "res = evaluate_case(gt, pred, (0.8, 0.8, 2.0), [1], tolerance=0.5); assert 0 < res[1]['nsd'] < 1, res; "
        "loaded = [m for m in ('torch', 'monai') if m in sys.modules]; assert not loaded, loaded"
    )
    _runs_in_a_fresh_interpreter(code)
