"""A regular (non-editable) install carries the data folders; the TVM pin lives in pyproject.toml alone."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_code_and_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mnet_compile-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for source in (ROOT / "mnet_compile").rglob("*.py"):
        assert f"mnet_compile/{source.relative_to(ROOT / 'mnet_compile')}" in names
    for preset in (ROOT / "targets").glob("*.json"):
        assert f"mnet_compile/data/targets/{preset.name}" in names
    for record in (ROOT / "schedules").rglob("*.json"):
        assert f"mnet_compile/data/schedules/{record.relative_to(ROOT / 'schedules')}" in names
    for table in (ROOT / "tables").glob("*.json"):
        assert f"mnet_compile/data/tables/{table.name}" in names
    for source in (ROOT / "device").rglob("*"):
        if source.is_file() and source.name != ".gitignore":
            assert f"mnet_compile/data/device/{source.relative_to(ROOT / 'device')}" in names


def test_tvm_pin_is_in_pyproject_only():
    pins = re.findall(r'"(apache-tvm(?:-ffi)?)==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert [name for name, _ in pins] == ["apache-tvm", "apache-tvm-ffi"]
    files = [ROOT / "README.md"] + [p for folder in (".ci", "device", "mnet_compile", "targets", "tests")
                                    for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in files:
        text = path.read_text(errors="ignore")
        for _, version in pins:
            assert version not in text, f"{path.relative_to(ROOT)} repeats the TVM pin {version}"
