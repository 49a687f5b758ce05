"""The package's shape: imports point one way down the pipeline, no cycles, and a torch-free CLI start.

Every import statement of every module (function-level ones included) is read with `ast`, so a new cycle or a
lower layer importing a higher one fails here, before anyone has to notice it in a review.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mnet_compile"

# Lowest first. A module may import modules of its own layer or of a lower one, never of a higher one.
LAYERS = [
    ("base", ["mnet_compile", "mnet_compile.errors", "mnet_compile.resources", "mnet_compile.targets"]),
    ("model definitions", ["mnet_compile.models"]),
    ("import", ["mnet_compile.frontends"]),
    ("graph passes", ["mnet_compile.graph"]),
    ("schedule and tune", ["mnet_compile.schedule"]),
    ("export", ["mnet_compile.export"]),
    ("device runtime and bundle", ["mnet_compile.device"]),
    ("orchestration and apps", ["mnet_compile.calibration", "mnet_compile.pipeline", "mnet_compile.peer_models",
                                "mnet_compile.bench", "mnet_compile.profile", "mnet_compile.pareto", "mnet_compile.cli"]),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest matching prefix."""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + ".") and prefix != "mnet_compile":
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer of tests/test_layers.py: add it to LAYERS"
    return best[0]


def imports_of(module: str) -> set[str]:
    """The package modules `module` imports (the submodule when a name is one, else the package)."""
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names = [f"{prefix}.{alias.name}" for alias in node.names] + [prefix]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_points_up():
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module in sorted(MODULES)
        for target in sorted(GRAPH[module])
        if layer_of(target) > layer_of(module)
    ]
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module, path):
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])


def test_the_checker_sees_what_it_must():
    """The graph this test builds has the edges it must have, so a test that passes is not vacuous."""
    assert "mnet_compile.schedule.tunable" in GRAPH["mnet_compile.schedule.kernels"]
    assert "mnet_compile.schedule.measure" in GRAPH["mnet_compile.schedule.remote"]
    assert "mnet_compile.pipeline" in GRAPH["mnet_compile.cli"]  # a function-level import
    assert layer_of("mnet_compile.schedule.rules.conv") > layer_of("mnet_compile.graph.passes")
    assert "mnet_compile.schedule.interrupt" in GRAPH["mnet_compile.schedule.measure"]
    assert "mnet_compile.device.runtime" in GRAPH["mnet_compile.device.signing"]


def test_trust_modules_sit_in_their_layers():
    """Issue 11's modules: staging with export, Ctrl-C and work-folder repair with tuning, signing beside the
    loader whose format it signs (the loader verifies on its own: it imports neither signing nor cryptography)."""
    assert LAYERS[layer_of("mnet_compile.export.staging")][0] == "export"
    assert LAYERS[layer_of("mnet_compile.schedule.interrupt")][0] == "schedule and tune"
    assert LAYERS[layer_of("mnet_compile.schedule.workdir")][0] == "schedule and tune"
    assert LAYERS[layer_of("mnet_compile.device.signing")][0] == "device runtime and bundle"
    assert "cryptography" not in (PACKAGE / "device" / "runtime.py").read_text()


def test_device_loader_stands_alone():
    """runtime.py is copied onto devices alone: it imports nothing of the package."""
    assert GRAPH["mnet_compile.device.runtime"] == set()


@pytest.mark.parametrize("args", [["--help"], ["targets"], ["info", "--alpha", "0.25"], ["compile", "--help"], ["tune", "--help"],
                                  ["pareto", "--help"]])
def test_cli_starts_without_torch_or_tvm(args):
    """`mnet-compile --help`, `targets` and `info` import neither torch nor TVM (tvm_ffi imports torch)."""
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # importing torch now fails\n"
        "from mnet_compile.cli import main\n"
        f"code = main({args!r})\n"
        "assert 'tvm' not in sys.modules and 'tvm_ffi' not in sys.modules, 'TVM imported'\n"
        "sys.exit(code)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_readme_module_table_matches_the_tree():
    """README's Pipeline block names every module and folder of the package, and nothing that is not there."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Pipeline", 1)[1].split("```", 2)[1].split("\ntargets/", 1)[0]  # the package part
    named = set(re.findall(r"([\w]+\.py)\b", block))
    files = {p.name for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert named == files, f"missing from README: {sorted(files - named)}; not in the tree: {sorted(named - files)}"
    folders = {p.name for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert folders <= set(re.findall(r"(\w+)/", block)), folders
