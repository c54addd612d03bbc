"""The house rules of docs/architecture.md, checked on the real imports.

1. import-linter's layers contract (pyproject.toml): base < models < results < scan < qk < render < pipeline < toy, explorer < cli.
2. The only upward import it lets through is the notebook view: ``headscope.render.lookup``, imported
   inside ``Result._repr_html_`` / ``Result._figure`` (results/base.py), never at module level;
   results and render form no other import circle.
3. A score is named in the registry only: no other module spells a score's definition.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import headscope
from headscope.scores import SCORES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(headscope.__file__).parent
LAYERS = ["base", "models", "results", "scan", "qk", "render", "pipeline", "toy", "cli"]
SIBLINGS = {
    "logits": "qk",
    "kinds": "qk",
    "circuits": "qk",
    "explorer": "toy",
}  # beside qk (none imports another); explorer beside toy
VIEW_FUNCTIONS = ("_repr_html_", "_figure")  # Result's, in results/base.py: the one way up
VIEW_LOOKUP = "headscope.render.lookup"


def layer_of(module: str) -> str:
    parts = module.split(".")
    name = SIBLINGS.get(parts[1], parts[1]) if len(parts) > 1 else ""
    return name if name in LAYERS else "base"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_with_context(path: Path):
    """(imported module, enclosing function name or None, line) for every headscope import in ``path``."""
    tree = ast.parse(path.read_text())
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            f = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                if base.startswith("headscope"):
                    out.append((base, f, child.lineno))
            elif isinstance(child, ast.Import):
                out.extend((a.name, f, child.lineno) for a in child.names if a.name.startswith("headscope"))
            visit(child, f)

    visit(tree, None)
    return mod, out


def test_import_linter_layers_contract_is_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    r = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_upward_imports_are_only_lazy_notebook_views():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mod, imports = imports_with_context(path)
        if mod in ("headscope", "headscope.__main__"):
            continue  # the package root and entry point sit above everything
        here = LAYERS.index(layer_of(mod))
        for target, func, line in imports:
            if target == "headscope":
                bad.append(f"{mod}:{line} imports the package root (import the module that defines the name)")
                continue
            if LAYERS.index(layer_of(target)) <= here:
                continue
            lazy_view = mod == "headscope.results.base" and func in VIEW_FUNCTIONS and target == VIEW_LOOKUP
            if not lazy_view:
                bad.append(
                    f"{mod}:{line} imports {target} ({layer_of(target)} is above {layer_of(mod)})"
                    + ("" if func else " at module level")
                )
    assert not bad, "\n".join(bad)


def test_render_never_loads_a_model_or_runs_an_analysis():
    forbidden = (
        "headscope.models.loading",
        "headscope.scan.induction_scan",
        "headscope.qk.analysis",
        "headscope.pipeline",
    )
    for path in sorted((PACKAGE / "render").rglob("*.py")):
        _, imports = imports_with_context(path)
        for target, _, line in imports:
            assert not target.startswith(forbidden), f"{path.name}:{line} imports {target}"


def test_every_score_definition_is_written_once():
    """The registry declares every definition; a weight score's text may sit in its maths module, which the
    registry reads it from (``successor.DEFINITION``), but nowhere else."""
    texts = {path: path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}
    for s in SCORES:
        where = [p.relative_to(PACKAGE).as_posix() for p, t in texts.items() if s.definition[:60] in t]
        assert len(where) == 1 and where[0].startswith("scores/"), f"{s.name}'s definition is written in {where}"


#: What running a model looks like in source: a forward pass, hooks, the HF module behind the bridge.
MODEL_RUNS = {"run_with_hooks", "run_with_cache", "forward", "generate", "original_model", "hook_dict", "hooks"}


def runs_a_model(source: str) -> list[str]:
    """Where ``source`` imports a layer that runs a model or calls one (line: what)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and (node.level or node.module.startswith("headscope")):
            target = node.module.split(".")[0 if node.level else 1]
            if target in LAYERS[1:] or target in SIBLINGS:
                found.append(f"{node.lineno}: imports {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr in MODEL_RUNS:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "model":
            found.append(f"{node.lineno}: model(...)")
    return found


def test_scores_hold_maths_only_and_run_no_model():
    bad = {p.name: runs_a_model(p.read_text()) for p in sorted((PACKAGE / "scores").rglob("*.py"))}
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}


def test_the_model_run_check_catches_a_forward_pass():
    planted = (
        "from ..models.embedding import effective_embedding\n"
        "def f(model, ids):\n"
        "    model.run_with_hooks(ids, fwd_hooks=[])\n"
        "    return model(ids)\n"
    )
    assert sorted(x.split(":")[0] for x in runs_a_model(planted)) == ["1", "3", "4"]


def test_results_and_render_form_no_import_circle_but_the_view_lookup():
    """Results import no renderer: every import from headscope.results into headscope.render, lazy ones
    included, is the one lookup edge, and render.lookup itself imports no result module."""
    import grimp

    graph = grimp.build_graph("headscope")
    up = {
        (a, b)
        for a in graph.find_descendants("headscope.results") | {"headscope.results"}
        for b in graph.find_modules_directly_imported_by(a)
        if b.startswith("headscope.render")
    }
    assert up == {("headscope.results.base", VIEW_LOOKUP)}
    lookup_imports = graph.find_modules_directly_imported_by(VIEW_LOOKUP)
    assert not {m for m in lookup_imports if m.startswith("headscope.results")}
    # and nothing below render reaches render except through that edge
    for layer in ("headscope.models", "headscope.scores", "headscope.scan", "headscope.qk", "headscope.logits"):
        for m in graph.find_descendants(layer) | {layer}:
            assert not [b for b in graph.find_modules_directly_imported_by(m) if b.startswith("headscope.render")], m


def test_results_import_no_analysis_renderer_or_command_line():
    above = ("scan", "qk", "logits", "kinds", "pipeline", "toy", "render", "cli")
    for path in sorted((PACKAGE / "results").rglob("*.py")):
        mod, imports = imports_with_context(path)
        for target, _func, line in imports:
            if (mod, target) == ("headscope.results.base", VIEW_LOOKUP):
                continue
            assert target.split(".")[1] not in above, f"{mod}:{line} imports {target}"


def notebook_view_edges(graph) -> set[tuple[str, str]]:
    """The allowed upward edges: a result's notebook view importing render inside a ``plot*``/``_repr_html_``."""
    allowed = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        mod, imports = imports_with_context(path)
        if layer_of(mod) == "render":
            continue
        lazy = {t for t, func, _ in imports if layer_of(t) == "render" and func and func.startswith(VIEW_FUNCTIONS)}
        eager = {
            t for t, func, _ in imports if layer_of(t) == "render" and not (func and func.startswith(VIEW_FUNCTIONS))
        }
        allowed |= {(mod, t) for t in lazy - eager if graph.direct_import_exists(importer=mod, imported=t)}
    return allowed


def import_cycles(graph, allowed: set[tuple[str, str]] = frozenset()) -> list[list[str]]:
    """Every group of modules that import one another in a circle (Tarjan's strongly connected components)."""
    edges = {
        m: sorted(t for t in graph.find_modules_directly_imported_by(m) if (m, t) not in allowed) for m in graph.modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges[v]:
                cycles.append(sorted(group))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    return cycles


#: Known lazy edges that close a circle, to be removed (not to be added to): cli/_numbers.command_name looks up
#: the typer app in headscope.cli, which imports cli/_common, which imports cli/_numbers (issue 23's merge).
KNOWN_CIRCLE_EDGES = {("headscope.cli._numbers", "headscope.cli")}


def test_no_import_circles_lazy_imports_included():
    import grimp

    graph = grimp.build_graph("headscope", cache_dir=None)  # reads every import, inside functions too
    cycles = import_cycles(graph, notebook_view_edges(graph) | KNOWN_CIRCLE_EDGES)
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_circle_check_finds_a_planted_lazy_circle(tmp_path, monkeypatch):
    import grimp

    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c  # lazy\n")
    (pkg / "c.py").write_text("import planted.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("planted", cache_dir=None)
    assert import_cycles(graph) == [["planted.a", "planted.b", "planted.c"]]
    (pkg / "b.py").write_text("def f():\n    pass\n")
    assert import_cycles(grimp.build_graph("planted", cache_dir=None)) == []


#: Known collisions that another branch of issue 18 removes (the results layer moves qk/results.py and
#: logits/results.py into headscope/results/ and keeps one rounding rule). Delete an entry once it is gone;
#: nothing else may collide.
PENDING_BASENAMES: set[str] = set()
PENDING_NAMES: set[str] = set()


def test_no_two_modules_share_a_basename():
    seen: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(path.relative_to(PACKAGE).as_posix())
    shared = {k: v for k, v in seen.items() if len(v) > 1}
    assert set(shared) <= PENDING_BASENAMES, f"modules sharing a name: {shared}"


def public_definitions() -> dict[str, set[str]]:
    """Every public class and function headscope defines, by name: the modules that define one so named.

    A name imported elsewhere (a re-export) is the same object and counts once, where it is defined.
    """
    import importlib
    import inspect
    import pkgutil

    found: dict[str, set[str]] = {}
    for info in pkgutil.walk_packages(headscope.__path__, "headscope."):
        if info.name.endswith("__main__"):
            continue
        for name, obj in vars(importlib.import_module(info.name)).items():
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if getattr(obj, "__module__", "").startswith("headscope."):
                found.setdefault(name, set()).add(f"{obj.__module__}.{obj.__qualname__}")
    return found


def test_no_two_public_names_collide():
    found = public_definitions()
    assert len(found) > 200  # the walk reached the whole package
    collide = {k: sorted(v) for k, v in found.items() if len(v) > 1}
    assert set(collide) <= PENDING_NAMES, f"public names defined twice: {collide}"


#: The packages held to the house rule of short functions (issue 18's aim; the rest of src/ follows as it is split).
SHORT_FUNCTION_PACKAGES = ("scan", "scores", "qk", "logits", "kinds")
MAX_BODY_LINES = 80


def long_functions(source: str, limit: int = MAX_BODY_LINES) -> list[str]:
    """``name (n lines)`` for every function whose body (docstring included) is over ``limit`` lines."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.body[0].lineno + 1
            if n > limit:
                out.append(f"{node.name} ({n} lines)")
    return out


def test_no_function_body_over_80_lines():
    bad = {
        p.relative_to(PACKAGE).as_posix(): long_functions(p.read_text())
        for pkg in SHORT_FUNCTION_PACKAGES
        for p in sorted((PACKAGE / pkg).rglob("*.py"))
    }
    assert not any(bad.values()), {k: v for k, v in bad.items() if v}
    assert long_functions("def f():\n" + "    x = 1\n" * 81) == ["f (81 lines)"]
