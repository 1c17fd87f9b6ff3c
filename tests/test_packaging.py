"""pyproject.toml against the code: entry points lead to real main(argv) functions, every third-party import is a
declared dependency of the right group (runtime/: base + ONNX Runtime only, so never torch), and the wheel carries
the shipped ONNX models and the seed split but not the training .pt checkpoints."""

import ast
import importlib
import importlib.metadata
import inspect
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
SOURCE_PACKAGES = ("train", "export", "runtime")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))


def declared(*extras: str) -> set[str]:
    names = {requirement_name(r) for r in PROJECT["dependencies"]}
    for extra in extras:
        names |= {requirement_name(r) for r in PROJECT["optional-dependencies"][extra]}
    return names


def imports(folder: Path):
    """(top-level module name, "file:line") for every absolute import in folder, function-level ones included."""
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                yield name.split(".")[0], f"{path.relative_to(REPO)}:{node.lineno}"


def third_party_imports(folder: Path) -> dict[str, list[str]]:
    """Top-level module name -> where it is imported, for modules that are neither stdlib nor ours."""
    ours = set(SOURCE_PACKAGES) | {"tests"}
    found: dict[str, list[str]] = {}
    for module, where in imports(folder):
        if module not in sys.stdlib_module_names and module not in ours:
            found.setdefault(module, []).append(where)
    return found


def undeclared(folder: Path, allowed: set[str]) -> list[str]:
    """Imports in folder whose installed distribution is not among the allowed requirement names."""
    providers = importlib.metadata.packages_distributions()
    problems = []
    for module, files in third_party_imports(folder).items():
        # not installed here (e.g. tomli on Python >= 3.11): take the module name as the distribution name
        distributions = {canonical(d) for d in providers.get(module, [module])}
        if not distributions & allowed:
            problems.append(f"{module} (distribution {sorted(distributions)}) at {files}")
    return problems


@pytest.mark.parametrize("script", sorted(PROJECT["scripts"]))
def test_entry_point_is_a_main_taking_argv(script):
    module_name, function_name = PROJECT["scripts"][script].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    assert callable(function)
    assert "argv" in inspect.signature(function).parameters, f"{script}: {module_name}.{function_name}(argv=None)"


def test_runtime_imports_nothing_but_its_own_dependencies():
    """The torch-free install (`pip install .[cpu]`) has only the base dependencies and ONNX Runtime."""
    banned = [f"{module} at {where}" for module, where in imports(REPO / "runtime")
              if module in {"torch", "torchvision", "train", "export"}]
    assert banned == [], "runtime/ must not import torch, train/ or export/, not even lazily"
    assert undeclared(REPO / "runtime", declared("cpu", "gpu", "ray")) == []  # ray: runtime.batch, lazily


def test_training_and_export_imports_are_declared():
    allowed = declared("cpu", "train", "edge")  # edge: export.engines runs the files in OpenVINO too
    assert undeclared(REPO / "train", allowed) == []
    assert undeclared(REPO / "export", allowed) == []


def test_test_imports_are_declared():
    assert undeclared(REPO / "tests", declared("cpu", "train", "dev", "ray")) == []


def test_cpu_and_gpu_extras_are_alternatives_not_base_dependencies():
    base = declared()
    assert not base & {"onnxruntime", "onnxruntime-gpu", "torch"}
    assert declared("cpu") - base == {"onnxruntime"}
    assert declared("gpu") - base == {"onnxruntime-gpu"}


def test_declared_packages_are_all_source_packages():
    """A new subpackage (a folder with __init__.py) must be listed in pyproject, or the wheel silently lacks it."""
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in SOURCE_PACKAGES
        for init in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert on_disk <= listed
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"runtime.models": "checkpoints"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel built from a copy of the repo in which checkpoints/ holds a made-up model and its .pt files are
    small stand-ins with the real names (a .pt that slipped into the wheel would be one of these)."""
    pytest.importorskip("setuptools", minversion="64")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt", "build", "*.egg-info")
    for top in (*SOURCE_PACKAGES, "checkpoints"):
        shutil.copytree(REPO / top, source / top, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    for pt in (REPO / "checkpoints").glob("*.pt"):
        (source / "checkpoints" / pt.name).write_bytes(b"not for the wheel")
    (source / "checkpoints" / "made-up-model.pt").write_bytes(b"not for the wheel")
    (source / "checkpoints" / "colorizer-made-up.onnx").write_bytes(b"stand-in")
    (source / "checkpoints" / "seed-colorizer.onnx").write_bytes(b"comparison model, repo only")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (path,) = (work / "dist").glob("*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


@pytest.mark.slow
def test_wheel_ships_the_colorizer_models_and_model_card_but_no_pt(wheel):
    """The wheel carries colorizer*.onnx; the seed preset's ONNX (for comparisons) and the .pt files stay in the repo."""
    names = set(wheel.namelist())
    expected = {f"runtime/models/{p.name}" for p in (REPO / "checkpoints").glob("colorizer*.onnx")}
    expected.add("runtime/models/colorizer-made-up.onnx")
    assert "runtime/models/seed-colorizer.onnx" not in names
    if (REPO / "checkpoints" / "README.md").is_file():
        expected.add("runtime/models/README.md")
    assert expected <= names
    assert [n for n in names if n.endswith(".pt")] == []
    assert "train/seed_split.csv" in names


@pytest.mark.slow
def test_wheel_holds_every_source_module(wheel):
    names = set(wheel.namelist())
    for top in SOURCE_PACKAGES:
        for path in (REPO / top).rglob("*.py"):
            assert path.relative_to(REPO).as_posix() in names
    assert "runtime/models/__init__.py" in names


@pytest.mark.slow
def test_wheel_metadata_names_the_console_scripts_and_extras(wheel):
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    for script, target in PROJECT["scripts"].items():
        assert f"{script} = {target}" in text
    (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    provided = {line.split(":", 1)[1].strip() for line in wheel.read(metadata).decode().splitlines()
                if line.startswith("Provides-Extra:")}
    assert provided == {"cpu", "gpu", "train", "dev", "ray", "edge"}


def test_ci_script_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash here")
    result = subprocess.run([bash, "-n", str(REPO / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
