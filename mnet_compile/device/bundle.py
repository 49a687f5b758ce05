"""The device bundle: one .tar.gz with the artifact, the Python loader, the C++ runner's source and a README."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from ..resources import data_dir, tvm_requirements
from . import runtime

APP_FILES = ("main.cc", "Makefile", "CMakeLists.txt")


def write_bundle(artifact: Path, preset) -> Path:
    """Write `<artifact>.tar.gz` beside the artifact folder (atomically) and return its path."""
    artifact = Path(artifact)
    manifest = json.loads((artifact / runtime.MANIFEST).read_text())
    top = artifact.name
    readme = (data_dir("device") / "README.bundle.md").read_text()
    tvm = tvm_requirements()
    values = {"name": top, "preset": preset.name, "arch": preset.arch, "runtime": preset.runtime.replace("{tvm}", tvm), "tvm": tvm}
    for key, value in values.items():
        readme = readme.replace("{" + key + "}", value)
    dest = artifact.with_name(f"{top}.tar.gz")
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in manifest["files"]:
                tar.add(artifact / name, f"{top}/{name}")
            tar.add(artifact / runtime.MANIFEST, f"{top}/{runtime.MANIFEST}")
            tar.add(runtime.__file__, f"{top}/runtime.py")
            for name in APP_FILES:
                tar.add(data_dir("device") / "app" / name, f"{top}/app/{name}")
            data = readme.encode()
            info = tarfile.TarInfo(f"{top}/README.md")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
