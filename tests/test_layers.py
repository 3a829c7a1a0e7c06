"""The layers and their arrows: which package may import which, no import cycle anywhere, small modules.

LAYERS is the one place the architecture's arrows are written. Each package may import only
itself and the packages listed for it; a package's sub-packages are layers of their own. The
tests below check the code against it, module by module, and that the module graph has no cycle.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# Bottom to top: a package may import those listed for it (and its own modules).
LAYERS = {
    "runtime": set(),
    "model": {"runtime"},
    "pipelines.storage": {"runtime", "model"},
    "runfolder": {"runtime", "model", "pipelines.storage"},
    "pipelines.decode": {"runtime", "model", "pipelines.storage"},
    "pipelines": {"runtime", "model", "pipelines.storage", "runfolder", "pipelines.decode"},
    "trainer": {"runtime", "model"},
    "tagruns": {"runtime", "model", "pipelines", "pipelines.storage", "runfolder", "pipelines.decode"},
    "infra.cloud": {"runtime", "model", "pipelines.storage", "trainer"},
    "infra.demo": {
        "runtime", "model", "pipelines", "pipelines.storage", "runfolder", "pipelines.decode", "trainer", "tagruns",
    },
    "infra.explore": {"runtime", "model", "pipelines", "pipelines.storage", "runfolder", "tagruns"},
    "infra": {
        "runtime", "model", "pipelines", "pipelines.storage", "runfolder", "pipelines.decode", "trainer", "tagruns",
        "infra.cloud", "infra.demo", "infra.explore",
    },
}  # fmt: skip
TOP_LEVEL = {name.split(".")[0] for name in LAYERS}
MAX_LINES = 400


def modules() -> dict[str, pathlib.Path]:
    """Every project module by dotted name (a package by its own name)."""
    found = {}
    for top in sorted(TOP_LEVEL):
        for path in sorted((REPO / top).glob("**/*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def package_of(module: str, all_modules: dict) -> str:
    """The layer a module belongs to: its longest dotted prefix named in LAYERS."""
    parts = module.split(".")
    is_package = all_modules[module].name == "__init__.py"
    for end in range(len(parts) if is_package else len(parts) - 1, 0, -1):
        if ".".join(parts[:end]) in LAYERS:
            return ".".join(parts[:end])
    raise AssertionError(f"{module} is in no layer of LAYERS")


def imports_of(path: pathlib.Path, all_modules: dict) -> set[str]:
    """The project modules a file imports, anywhere in its code (``from a import b`` counts a.b if it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            if not any(name in all_modules for name in names):  # names from a module, not modules
                names = [node.module]
        else:
            continue
        for name in names:
            while name and name not in all_modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    all_modules = modules()
    return {name: imports_of(path, all_modules) - {name} for name, path in all_modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each a cycle or several."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_module_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_the_layers_form_no_cycle():
    """LAYERS itself only points downward: no layer reaches itself through its arrows."""
    assert cycles({name: set(allowed) for name, allowed in LAYERS.items()}) == []


@pytest.mark.parametrize("layer", list(LAYERS), ids=[f"{n}-{name}" for n, name in enumerate(LAYERS, 1)])
def test_a_layer_imports_only_what_lies_below_it(layer):
    all_modules = modules()
    edges = graph()
    for module in sorted(all_modules):
        if package_of(module, all_modules) != layer:
            continue
        for target in sorted(edges[module]):
            target_layer = package_of(target, all_modules)
            assert target_layer == layer or target_layer in LAYERS[layer], (
                f"{module} ({layer}) imports {target} ({target_layer}); {layer} may import {sorted(LAYERS[layer])}"
            )


def test_every_package_is_a_layer_and_says_what_lives_there():
    all_modules = modules()
    for name, path in all_modules.items():
        if path.name == "__init__.py":
            assert name in LAYERS, f"package {name} is not in LAYERS"
            docstring = ast.get_docstring(ast.parse(path.read_text()))
            assert docstring and docstring.endswith("."), f"{name}/__init__.py needs a one-sentence docstring"


def test_modules_stay_under_400_lines():
    for name, path in modules().items():
        assert len(path.read_text().splitlines()) <= MAX_LINES, f"{name} is over {MAX_LINES} lines"


def loaded_by(imports: str, tops: tuple[str, ...]) -> list[str]:
    """The modules of the top-level packages ``tops`` that a fresh interpreter has loaded after ``imports``."""
    code = f"import sys, {imports}\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {tops!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return ast.literal_eval(result.stdout.strip())


def test_the_trainer_does_not_import_beam():
    imports = "trainer.task, trainer.inputs, trainer.compare, trainer.exporting"
    assert loaded_by(imports, ("apache_beam", "pipelines", "tagruns")) == []


def test_the_tag_schema_imports_no_beam():
    """Readers take the track table's schema without loading Beam (or TensorFlow)."""
    assert loaded_by("runfolder.schema, runfolder.layout", ("apache_beam", "tensorflow", "pipelines")) == []


def test_no_reader_imports_a_beam_job_module():
    """Commands that read runs go through runfolder, never through the Beam jobs that write them
    (the demo chain runs the jobs: it is their caller, not a reader)."""
    jobs = {"pipelines.tag", "pipelines.featurize"}
    for module, targets in graph().items():
        if module.split(".")[0] in ("tagruns", "infra") and module != "infra.demo.chain":
            assert not targets & jobs, f"{module} imports {sorted(targets & jobs)}"


def test_the_packages_read_nothing_outside_the_repository():
    """An installed package has no ../shared beside it: only tests may read the shared clips."""
    for path in modules().values():
        assert "shared/" not in path.read_text(), f"{path.relative_to(REPO)} refers to a path outside the package"


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a two-module cycle is found, and so is a layer importing upward."""
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    fake = {"model.x": tmp_path / "x.py", "infra.y": tmp_path / "y.py", "infra": tmp_path / "__init__.py"}
    fake["model.x"].write_text("from infra import y\n")
    assert imports_of(fake["model.x"], fake) == {"infra.y"}
    assert package_of("infra.y", fake) not in LAYERS[package_of("model.x", fake)]
