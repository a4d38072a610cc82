"""The package as built: the wheel holds every config file, the sweeper plugins and the console
commands (scripts/check-wheel.sh, run by CI, installs it and runs it from a temporary directory)."""

import subprocess
import sys
import zipfile

import pytest

from actbench.conf import CONF_DIR
from conftest import ROOT


@pytest.mark.slow
def test_the_wheel_holds_the_configs_the_plugins_and_the_commands(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(tmp_path)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = tmp_path.glob("actbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"actbench/conf/{p.relative_to(CONF_DIR)}" for p in CONF_DIR.rglob("*.yaml")}
    assert len(shipped) > 30 and shipped <= names
    assert {"hydra_plugins/actbench_sweeper/packing_sweeper.py", "hydra_plugins/actbench_sweeper/study_sweeper.py"} <= names
    entry_points = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for command in ("actbench-train = actbench.train:main", "actbench-report = actbench.report:main", "actbench-data = actbench.data:main"):
        assert command in entry_points
    assert not any(n.startswith(("tests/", "scripts/")) for n in names)


def test_no_module_of_actbench_imports_itself_through_others():
    """The layers run one way: grimp reads every import, those inside functions included, and no
    group of modules imports each other in a circle."""
    import grimp

    graph = grimp.build_graph("actbench", include_external_packages=False)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    circles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(m):  # Tarjan's strongly connected components
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for n in imports[m]:
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = set()
            while not group or m not in group:
                group.add(stack.pop())
            on_stack.difference_update(group)
            if len(group) > 1:
                circles.append(sorted(group))

    for m in sorted(imports):
        if m not in index:
            visit(m)
    assert circles == []


def test_one_class_is_named_run():
    import ast

    named = [f"{p.relative_to(ROOT)}" for p in (ROOT / "actbench").rglob("*.py")
             for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef) and node.name == "Run"]
    assert named == ["actbench/results.py"]
