"""The package layout is the architecture: lower layers never import upper ones, lazily or not.

Every `import` in cai/ counts here, also one inside a function: a lazy import hides a circle from Python, not
from a reader. Layers, bottom up: the run's context (`cai.run_context`) and the trainers' common code, the
stages (`cai.stages`, `cai.train`), the worker (`cai.runs`), and the engines that run stage runs
(`cai.experiments`, `cai.pipeline`). The arena package's modules import each other one way only.
"""

from __future__ import annotations

import ast
from pathlib import Path

CAI = Path(__file__).resolve().parents[1] / "cai"


def _modules() -> dict[str, Path]:
    out = {}
    for path in CAI.rglob("*.py"):
        name = ".".join(path.relative_to(CAI.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def imports(module: str) -> set[str]:
    """The cai modules `module` imports anywhere in its text (a `from pkg import sub` names the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cai":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "cai")
    return found - {module}


def under(prefix: str) -> list[str]:
    return [m for m in MODULES if m == prefix or m.startswith(prefix + ".")]


def test_stages_and_trainers_never_import_the_worker():
    offenders = {m: sorted(i for i in imports(m) if i == "cai.runs")
                 for m in under("cai.stages") + under("cai.train")}
    assert {m: i for m, i in offenders.items() if i} == {}


def test_the_run_context_sits_below_the_stages_the_worker_and_the_trainers():
    upper = ("cai.runs", "cai.stages", "cai.train", "cai.experiments", "cai.pipeline")
    assert sorted(i for i in imports("cai.run_context") if i.startswith(upper)) == []


def test_the_trainers_common_code_never_imports_the_worker():
    assert "cai.runs" not in imports("cai.train.common")


def test_arena_modules_import_each_other_without_a_circle():
    arena = set(under("cai.arena")) - {"cai.arena"}
    graph = {m: imports(m) & arena for m in arena}
    assert graph["cai.arena.campaigns"] == set()  # the bottom of the package
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join((*path, m))
        if m in done:
            return
        for n in sorted(graph[m]):
            visit(n, (*path, m))
        done.add(m)

    for m in sorted(arena):
        visit(m, ())

