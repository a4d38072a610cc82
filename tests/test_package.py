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
