"""A regular (non-editable) install must carry the data folders."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_targets_and_schedules(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mnet_compile-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in (ROOT / "targets").glob("*.json"):
        assert f"mnet_compile/targets/{preset.name}" in names
    for record in (ROOT / "schedules").rglob("*.json"):
        assert f"mnet_compile/schedules/{record.relative_to(ROOT / 'schedules')}" in names
    for source in (ROOT / "device").rglob("*"):
        if source.is_file() and source.name != ".gitignore":
            assert f"mnet_compile/device/{source.relative_to(ROOT / 'device')}" in names
    assert "mnet_compile/runtime.py" in names
