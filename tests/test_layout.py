"""The package's layers, as README's "Layout" draws them: which module imports which, read
from the source (at the top of a module or inside a function; doctests do not count)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "uld"
IMPORT = re.compile(r"^\s*(?:from uld\.(\w+) import|import uld\.(\w+))", re.M)
LAYERS = [  # top to bottom; a module may import its own layer's modules and those below
    ("command line", ["__init__", "__main__", "runner"]),
    ("batches", ["replicate", "experiments", "comparison"]),
    ("one run", ["distill"]),
    ("instruments", ["distributions", "grammar", "ot", "synthetic"]),
    ("its parts", ["methods", "teacher_answers", "teacher_cache", "trainer", "evaluation"]),
    ("models", ["models", "task_teachers", "pretraining", "training_loop", "model_files"]),
    ("answers", ["generation", "metrics", "diagnostics"]),
    ("the loss", ["loss", "alignment", "kernel", "distance", "tail_bound", "sorting"]),
    ("data", ["data", "prompts", "embedded", "tokenizers"]),
    ("files", ["storage", "locks", "yaml_files", "timing", "plots"]),
]


def imports() -> dict[str, set[str]]:
    """``{module: the uld modules it imports}``."""
    return {path.stem: {a or b for a, b in IMPORT.findall(path.read_text())} - {path.stem}
            for path in PACKAGE.glob("*.py")}


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for module in graph.get(todo.pop(), ()):
            if module not in seen:
                seen.add(module)
                todo.append(module)
    return seen


def upward(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Each import of a module from a higher layer, as ``"a (layer) -> b (layer)"``."""
    level = {module: index for index, (_, modules) in enumerate(layers) for module in modules}
    return sorted(f"{module} ({layers[level[module]][0]}) -> {other} ({layers[level[other]][0]})"
                  for module, others in graph.items() for other in others if level[other] < level[module])


def test_every_module_has_a_layer():
    placed = [module for _, modules in LAYERS for module in modules]
    assert len(placed) == len(set(placed))
    assert set(imports()) == set(placed), "place a new module in LAYERS and in README's Layout"


def test_no_import_goes_up_a_layer():
    assert upward(imports()) == []


def test_no_module_reaches_itself():
    graph = imports()
    assert sorted(module for module in graph if module in reachable(graph, module)) == []


def test_the_checks_can_fail():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [module for module in graph if module in reachable(graph, module)] == ["a", "b", "c"]
    assert upward({"low": {"high"}, "high": set()}, [("top", ["high"]), ("bottom", ["low"])]) == \
        ["low (bottom) -> high (top)"]


def test_readme_draws_the_same_layers():
    readme = (PACKAGE.parent / "README.md").read_text()
    drawing = readme[readme.index("## Layout"):]
    drawing = drawing[:drawing.index("tests/ ")]
    for name, modules in LAYERS:
        for module in modules:
            if module != "__init__":
                assert f"{module}.py" in drawing, module
    positions = [re.search(rf"^(uld/)? +{name}  ", drawing, re.M).start() for name, _ in LAYERS]
    assert positions == sorted(positions), "README lists the layers top to bottom"
