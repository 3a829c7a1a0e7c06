"""Layering: model at the bottom, pipelines and trainer above it, infra on top; the trainer never imports Beam."""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
# package -> the packages it may import
ALLOWED = {
    "runtime": {"runtime"},
    "model": {"runtime", "model"},
    "pipelines": {"runtime", "model", "pipelines"},
    "trainer": {"runtime", "model", "trainer"},
    "infra": {"runtime", "model", "pipelines", "trainer", "infra"},
}
MAX_LINES = 400


def project_imports(path: pathlib.Path) -> set[str]:
    """The top-level project packages a module imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in ALLOWED)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_no_module_imports_a_layer_above_it(package):
    for path in sorted((REPO / package).glob("**/*.py")):
        upward = project_imports(path) - ALLOWED[package]
        assert not upward, f"{path.relative_to(REPO)} imports {sorted(upward)}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_modules_stay_under_400_lines(package):
    for path in sorted((REPO / package).glob("**/*.py")):
        assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.relative_to(REPO)} is over {MAX_LINES} lines"


def test_each_package_says_what_lives_there():
    for package in ALLOWED:
        docstring = ast.get_docstring(ast.parse((REPO / package / "__init__.py").read_text()))
        assert docstring and docstring.endswith("."), f"{package}/__init__.py needs a one-sentence docstring"


def test_the_trainer_does_not_import_beam():
    code = (
        "import sys, trainer.task, trainer.inputs, trainer.compare, trainer.exporting\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'pipelines')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_code_points_outside_the_repository():
    """Notes live in the comments themselves; only tests read the shared audio clips."""
    for path in sorted(REPO.glob("*/**/*.py")):
        if ".venv" in path.parts:
            continue
        text = path.read_text()
        markers = ("STACK_NOTES", "SEED_MODELS", "STYLE.md") + (
            ("shared/",) if path.parts[len(REPO.parts)] in ALLOWED else ()
        )
        for marker in markers:
            assert marker not in text or path.name == "test_layers.py", f"{path.relative_to(REPO)} refers to {marker}"
