"""Layers import downward only: io, memory and data <- readouts <- model <- training <- decoder and entry
points. Pipelines write sessions and stand apart from the library that reads them. Checked on the source, so an
upward import anywhere (also one inside a function) fails here."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "poyo"
# what each layer may import from poyo (besides itself and the package root)
BASE = {"io", "memory", "data", "readouts"}  # what everything above the model may use
ALLOWED = {
    "configs": set(),  # the presets (package data) and their reader
    "io": set(),
    "memory": set(),  # the allocator setting of training and streaming processes
    "data": {"io"},
    "pipelines": set(),
    "readouts": {"io", "data"},
    "model": {"io", "data", "readouts", "configs"},
    "training": BASE | {"model", "pipelines", "configs"},  # a run generates the synthetic set
    "stream": BASE | {"model"},
    "decoder": BASE | {"model", "training", "pipelines", "configs"},  # the estimator over runs
    "cli": BASE | {"model", "training", "pipelines", "configs", "decoder"},  # the poyo command
}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(module, at top level)`` for each ``poyo`` import in a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, id(node) in top) for n in names if n == "poyo" or n.startswith("poyo.")]
    return out


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        rel = p.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        out[".".join(parts)] = p
    return out


def test_no_layer_imports_upward():
    bad = []
    for mod, path in modules().items():
        mine = layer(mod)
        if not mine:
            continue
        for name, _ in imports(path):
            other = layer(name)
            if other and other != mine and other not in ALLOWED[mine]:
                bad.append(f"{mod} imports {name}")
    assert not bad, bad


def test_no_import_cycle_at_module_level():
    known = modules()
    graph = {}
    for mod, path in known.items():
        targets = set()
        for name, top in imports(path):
            if not top:
                continue
            while name and name not in known:  # poyo.model.POYO -> poyo.model
                name = name.rpartition(".")[0]
            if name and name != mod and name != "poyo":
                targets.add(name)
        graph[mod] = targets
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if nxt.startswith(node + "."):  # a package importing its own modules is not a cycle back
                continue
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def test_the_check_sees_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: a model module importing training is reported."""
    fake = tmp_path / "poyo" / "model"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from poyo.training.module import POYOModule\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path / "poyo")
    try:
        test_no_layer_imports_upward()
    except AssertionError as e:
        assert "poyo.model.x imports poyo.training.module" in str(e)
    else:
        raise AssertionError("an upward import went unnoticed")
