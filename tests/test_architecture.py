"""The house rules of docs/architecture.md, checked on the real imports.

1. import-linter's layers contract (pyproject.toml): base < models < results < scan < qk < render < pipeline < cli.
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
SIBLINGS = {"logits": "qk", "kinds": "qk"}  # beside qk (none imports another)
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
